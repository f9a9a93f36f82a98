"""``iris.client.client``: IrisClient, Job, Task, the job context and namespaced actors.

Signatures follow Iris's ``lib/iris/src/iris/client/client.py`` (see the fray backend's
docstring for the commit): job ids are the submitted name, or ``PARENT/NAME`` when submitted
from inside a job; a job's namespace is the root of its id; the endpoint registry and the
resolver prefix actor names with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from iris.actor.resolver import ResolvedEndpoint, Resolver, ResolveResult
from iris.cluster.client import LocalClusterClient, RemoteClusterClient, get_job_info
from iris.cluster.client.job_info import JobInfo
from iris.cluster.client.standin_cluster import JobAlreadyExists
from iris.cluster.types import (
    Constraint,
    Entrypoint,
    EnvironmentSpec,
    JobId,
    Namespace,
    ResourceSpec,
    is_job_finished,
)
from iris.rpc import cluster_pb2

__all__ = [
    "EndpointRegistry",
    "IrisClient",
    "IrisContext",
    "Job",
    "JobAlreadyExists",
    "JobFailedError",
    "LocalClientConfig",
    "LogEntry",
    "Task",
    "get_iris_ctx",
    "iris_ctx",
    "iris_ctx_scope",
]


@dataclass
class LogEntry:
    timestamp_ms: int
    source: str
    data: str

    @classmethod
    def from_proto(cls, proto: Any) -> LogEntry:
        return cls(timestamp_ms=proto.timestamp_ms, source=proto.source, data=proto.data)


class JobFailedError(Exception):
    """A job ended in a state other than SUCCEEDED."""

    def __init__(self, job_id: JobId, status: cluster_pb2.JobStatus) -> None:
        self.job_id = job_id
        self.status = status
        message = f"Job {job_id} {cluster_pb2.JobState.Name(status.state)}"
        super().__init__(f"{message}: {status.error}" if status.error else message)


class Task:
    def __init__(self, client: IrisClient, job_id: JobId, task_index: int) -> None:
        self._client = client
        self._job_id = job_id
        self._task_index = task_index

    @property
    def task_index(self) -> int:
        return self._task_index

    @property
    def task_id(self) -> str:
        return f"{self._job_id}/task-{self._task_index}"

    @property
    def job_id(self) -> JobId:
        return self._job_id

    def status(self) -> cluster_pb2.TaskStatus:
        return self._client._cluster.get_task_status(str(self._job_id), self._task_index)  # type: ignore[no-any-return]

    @property
    def state(self) -> int:
        return self.status().state

    def logs(self, *, start_ms: int = 0, max_lines: int = 0) -> list[LogEntry]:
        entries = self._client._cluster.fetch_task_logs(self.task_id, start_ms, max_lines)
        return [LogEntry.from_proto(e) for e in entries]


class Job:
    def __init__(self, client: IrisClient, job_id: JobId) -> None:
        self._client = client
        self._job_id = job_id

    @property
    def job_id(self) -> JobId:
        return self._job_id

    def __repr__(self) -> str:
        return f"Job({self._job_id!r})"

    def status(self) -> cluster_pb2.JobStatus:
        return self._client._cluster.get_job_status(self._job_id)  # type: ignore[no-any-return]

    @property
    def state(self) -> int:
        return self.status().state

    def tasks(self) -> list[Task]:
        statuses = self._client._cluster.list_tasks(str(self._job_id))
        return [Task(self._client, self._job_id, ts.task_index) for ts in statuses]

    def wait(
        self,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        *,
        raise_on_failure: bool = True,
        stream_logs: bool = False,
    ) -> cluster_pb2.JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if is_job_finished(status.state):
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Job {self._job_id} did not complete in {timeout}s")
            time.sleep(min(poll_interval, 0.1))
        if raise_on_failure and status.state != cluster_pb2.JOB_STATE_SUCCEEDED:
            raise JobFailedError(self._job_id, status)
        return status

    def terminate(self) -> None:
        self._client._cluster.terminate_job(self._job_id)


@dataclass
class IrisContext:
    job_id: str
    attempt_id: int = 0
    worker_id: str | None = None
    client: IrisClient | None = None
    registry: NamespacedEndpointRegistry | None = None
    ports: dict[str, int] | None = None

    @property
    def namespace(self) -> Namespace:
        return Namespace.from_job_id(self.job_id)

    def get_port(self, name: str) -> int:
        if not self.ports or name not in self.ports:
            raise KeyError(f"Port '{name}' not allocated; request ports=['{name}'] at submit")
        return self.ports[name]

    @property
    def resolver(self) -> Resolver:
        if self.client is None:
            raise RuntimeError("No client available in context")
        return self.client.resolver()


_iris_context: ContextVar[IrisContext | None] = ContextVar("iris_context", default=None)


def get_iris_ctx() -> IrisContext | None:
    """The current context; inside a task, made from its ``IRIS_*`` variables."""
    ctx = _iris_context.get()
    if ctx is not None:
        return ctx
    info = get_job_info()
    if info is None:
        return None
    ctx = _context_from_job_info(info)
    _iris_context.set(ctx)
    return ctx


def iris_ctx() -> IrisContext:
    ctx = get_iris_ctx()
    if ctx is None:
        raise RuntimeError("iris_ctx() called outside an Iris job (no job info available)")
    return ctx


@contextmanager
def iris_ctx_scope(ctx: IrisContext) -> Iterator[IrisContext]:
    token = _iris_context.set(ctx)
    try:
        yield ctx
    finally:
        _iris_context.reset(token)


def _context_from_job_info(info: JobInfo) -> IrisContext:
    client = registry = None
    if info.controller_address:
        client = IrisClient.remote(info.controller_address)
        registry = client._registry
    return IrisContext(
        job_id=info.job_id,
        attempt_id=info.attempt_id,
        worker_id=info.worker_id,
        client=client,
        registry=registry,
        ports=dict(info.ports),
    )


@dataclass
class LocalClientConfig:
    max_workers: int = 4
    port_range: tuple[int, int] = (50000, 60000)


class EndpointRegistry(Protocol):
    def register(self, name: str, address: str, metadata: dict[str, str] | None = None) -> str: ...

    def unregister(self, endpoint_id: str) -> None: ...


class NamespacedEndpointRegistry:
    """Registers endpoints as ``NAMESPACE/name``, the namespace from the current job."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster

    def register(self, name: str, address: str, metadata: dict[str, str] | None = None) -> str:
        ctx = get_iris_ctx()
        if ctx is None:
            raise RuntimeError("No IrisContext - must be called from within a job")
        prefixed = f"{Namespace.from_job_id(ctx.job_id)}/{name}"
        return self._cluster.register_endpoint(  # type: ignore[no-any-return]
            name=prefixed, address=address, job_id=ctx.job_id, metadata=metadata
        )

    def unregister(self, endpoint_id: str) -> None:
        self._cluster.unregister_endpoint(endpoint_id)


class NamespacedResolver:
    """Resolves ``name`` as ``NAMESPACE/name``: a given namespace, or the current job's."""

    def __init__(self, cluster: Any, namespace: Namespace | None = None) -> None:
        self._cluster = cluster
        self._namespace = namespace

    def resolve(self, name: str) -> ResolveResult:
        namespace = self._namespace
        if namespace is None:
            ctx = get_iris_ctx()
            if ctx is None:
                raise RuntimeError("No IrisContext - give a namespace or call from within a job")
            namespace = Namespace.from_job_id(ctx.job_id)
        prefixed = f"{namespace}/{name}"
        endpoints = [
            ResolvedEndpoint(
                url=f"http://{ep.address}", actor_id=ep.endpoint_id, metadata=dict(ep.metadata)
            )
            for ep in self._cluster.list_endpoints(prefix=prefixed)
            if ep.name == prefixed
        ]
        return ResolveResult(name=name, endpoints=endpoints)


class IrisClient:
    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._registry = NamespacedEndpointRegistry(cluster)
        self._resolver = NamespacedResolver(cluster)

    @classmethod
    def local(cls, config: LocalClientConfig | None = None) -> IrisClient:
        cfg = config or LocalClientConfig()
        return cls(LocalClusterClient.create(max_workers=cfg.max_workers))

    @classmethod
    def remote(
        cls,
        controller_address: str,
        *,
        workspace: Path | None = None,
        bundle_gcs_path: str | None = None,
        timeout_ms: int = 30000,
    ) -> IrisClient:
        return cls(RemoteClusterClient(controller_address, bundle_gcs_path, None, timeout_ms))

    def __enter__(self) -> IrisClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    @property
    def endpoint_registry(self) -> EndpointRegistry:
        return self._registry

    def resolver(self) -> Resolver:
        return self._resolver

    def resolver_for_job(self, job_id: JobId | str) -> Resolver:
        return NamespacedResolver(self._cluster, namespace=Namespace.from_job_id(str(job_id)))

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
        ports: list[str] | None = None,
        scheduling_timeout: Any = None,
        constraints: list[Constraint] | None = None,
        coscheduling: Any = None,
        replicas: int = 1,
        max_retries_failure: int = 0,
        max_retries_preemption: int = 100,
        timeout: Any = None,
    ) -> Job:
        if "/" in name:
            raise ValueError("Job name cannot contain '/'")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        ctx = get_iris_ctx()
        job_id = JobId(f"{ctx.job_id}/{name}" if ctx else name)
        self._cluster.submit_job(
            job_id=job_id,
            entrypoint=entrypoint,
            resources=resources,
            environment=environment,
            ports=ports,
            constraints=list(constraints or []),
            replicas=replicas,
        )
        return Job(self, job_id)

    def status(self, job_id: JobId) -> cluster_pb2.JobStatus:
        return self._cluster.get_job_status(job_id)  # type: ignore[no-any-return]

    def terminate(self, job_id: JobId) -> None:
        self._cluster.terminate_job(job_id)

    def list_jobs(
        self, *, states: list[int] | None = None, prefix: str | None = None
    ) -> list[cluster_pb2.JobStatus]:
        return [
            job
            for job in self._cluster.list_jobs()
            if (states is None or job.state in states)
            and (prefix is None or job.job_id.startswith(prefix))
        ]

    def list_tasks(self, job_id: JobId) -> list[cluster_pb2.TaskStatus]:
        return self._cluster.list_tasks(str(job_id))  # type: ignore[no-any-return]

    def fetch_task_logs(
        self, job_id: JobId, task_index: int, *, start_ms: int = 0, max_lines: int = 0
    ) -> list[LogEntry]:
        entries = self._cluster.fetch_task_logs(f"{job_id}/task-{task_index}", start_ms, max_lines)
        return [LogEntry.from_proto(e) for e in entries]

    def shutdown(self, wait: bool = True) -> None:
        self._cluster.shutdown(wait=wait)
