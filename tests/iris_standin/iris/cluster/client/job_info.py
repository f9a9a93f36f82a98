"""What a task knows about itself, read from the ``IRIS_*`` variables its worker set."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class JobInfo:
    job_id: str
    task_index: int = 0
    num_tasks: int = 1
    attempt_id: int = 0
    worker_id: str | None = None
    controller_address: str | None = None
    advertise_host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)


def get_job_info() -> JobInfo | None:
    """This task's info, or None outside an Iris task."""
    job_id = os.environ.get("IRIS_JOB_ID")
    if not job_id:
        return None
    ports = {
        key[len("IRIS_PORT_") :].lower(): int(value)
        for key, value in os.environ.items()
        if key.startswith("IRIS_PORT_")
    }
    return JobInfo(
        job_id=job_id,
        task_index=int(os.environ.get("IRIS_TASK_INDEX", "0")),
        num_tasks=int(os.environ.get("IRIS_NUM_TASKS", "1")),
        attempt_id=int(os.environ.get("IRIS_ATTEMPT_ID", "0")),
        worker_id=os.environ.get("IRIS_WORKER_ID"),
        controller_address=os.environ.get("IRIS_CONTROLLER_ADDRESS"),
        advertise_host=os.environ.get("IRIS_ADVERTISE_HOST", "127.0.0.1"),
        ports=ports,
    )
