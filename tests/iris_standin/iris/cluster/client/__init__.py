"""``iris.cluster.client``: job info for code running in a task, and the cluster clients."""

from iris.cluster.client.job_info import JobInfo, get_job_info
from iris.cluster.client.standin_cluster import LocalClusterClient, RemoteClusterClient

__all__ = ["JobInfo", "LocalClusterClient", "RemoteClusterClient", "get_job_info"]
