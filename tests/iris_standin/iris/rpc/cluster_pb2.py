"""The ``cluster_pb2`` names the client layer uses: job and task states, statuses, devices.

In Iris these are generated protobuf messages; the stand-in keeps their field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

JOB_STATE_UNSPECIFIED = 0
JOB_STATE_PENDING = 1
JOB_STATE_BUILDING = 2
JOB_STATE_RUNNING = 3
JOB_STATE_SUCCEEDED = 4
JOB_STATE_FAILED = 5
JOB_STATE_KILLED = 6
JOB_STATE_WORKER_FAILED = 7
JOB_STATE_UNSCHEDULABLE = 8

TASK_STATE_PENDING = 1
TASK_STATE_RUNNING = 3
TASK_STATE_SUCCEEDED = 4
TASK_STATE_FAILED = 5
TASK_STATE_KILLED = 6


class JobState:
    """The enum's helper: ``JobState.Name(value)``."""

    @staticmethod
    def Name(value: int) -> str:  # noqa: N802 (protobuf's spelling)
        for name, number in globals().items():
            if name.startswith("JOB_STATE_") and number == value:
                return name
        raise ValueError(f"no JobState {value}")


TaskState = JobState  # (task states share the numbers used here)


@dataclass
class GpuDevice:
    variant: str = ""
    count: int = 0


@dataclass
class TpuDevice:
    variant: str = ""
    count: int = 0


@dataclass
class DeviceConfig:
    gpu: GpuDevice | None = None
    tpu: TpuDevice | None = None

    def HasField(self, name: str) -> bool:  # noqa: N802
        return getattr(self, name, None) is not None


@dataclass
class TaskStatus:
    job_id: str = ""
    task_index: int = 0
    state: int = TASK_STATE_PENDING
    exit_code: int = 0
    error: str = ""


@dataclass
class JobStatus:
    job_id: str = ""
    state: int = JOB_STATE_PENDING
    error: str = ""
    exit_code: int = 0
    num_tasks: int = 0
    tasks: list[TaskStatus] = field(default_factory=list)


@dataclass
class LogEntryProto:
    """``cluster_pb2.Worker.LogEntry``."""

    timestamp_ms: int = 0
    source: str = "stdout"
    data: str = ""


class Worker:
    LogEntry = LogEntryProto
