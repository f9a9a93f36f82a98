"""A fray.v2 job: submit a function as a job, stream its output, wait for it to end.

    python examples/v2/job.py                                  # local (the default)
    python examples/v2/job.py ray                              # a local Ray instance
    python examples/v2/job.py fray?address=http://127.0.0.1:7625
    FRAY_CLUSTER_SPEC=fray?address=http://127.0.0.1:7625 python examples/v2/job.py

A job runs in a process of its own (on fray: on a worker that has the resources it asks for;
on Ray: through Ray's Jobs API). The backend comes from the first argument, else
$FRAY_CLUSTER_SPEC, else "local".
"""

from __future__ import annotations

import os
import sys

from fray.v2 import Entrypoint, JobFailedError, ResourceSpec, create_cluster, current_cluster


def train(steps: int) -> None:
    # Runs in the job's process. FRAY_WORKER_ID is set on fray workers only.
    where = os.environ.get("FRAY_WORKER_ID", "this machine")
    for step in range(steps):
        print(f"step {step} of {steps} on {where}", flush=True)


def broken() -> None:
    raise RuntimeError("this job fails on purpose")


def main() -> None:
    cluster = create_cluster(sys.argv[1]) if len(sys.argv) > 1 else current_cluster()
    print("cluster:", cluster)

    # The job asks for one CPU and 256 MiB; it is placed (or waits) accordingly.
    resources = ResourceSpec(cpu=1, memory="256m")
    job = cluster.submit(Entrypoint.from_callable(train, args=(3,)), "train", resources)
    print("submitted", job.job_id)
    # Prints each line of the job's output as "[job id] line" while it runs.
    status = job.wait(timeout=120, stream_logs=True)
    print("train:", status)

    # A job that raises: wait() raises JobFailedError carrying the job's traceback.
    failing = cluster.submit(Entrypoint.from_callable(broken), "broken", resources)
    try:
        failing.wait(timeout=120)
    except JobFailedError as exc:
        print("broken: failed as expected:", str(exc).strip().splitlines()[-1])


if __name__ == "__main__":
    main()
