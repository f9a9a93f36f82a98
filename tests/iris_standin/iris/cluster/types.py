"""``iris.cluster.types``: ResourceSpec, EnvironmentSpec, Entrypoint, constraints, ids."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NewType

import cloudpickle

from iris.rpc import cluster_pb2

JobId = NewType("JobId", str)


class Namespace(str):
    """The root of a job id: actors are found only within one namespace."""

    @classmethod
    def from_job_id(cls, job_id: str) -> Namespace:
        root = str(job_id).lstrip("/").split("/", 1)[0]
        if not root:
            raise ValueError("a job id cannot be empty")
        return cls(root)


def _size(value: str | int) -> int:
    if isinstance(value, int):
        return value
    text = value.strip().lower().rstrip("b").rstrip("i")
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text or 0)


@dataclass
class ResourceSpec:
    """What one task needs; ``memory``/``disk`` take bytes or strings such as ``"8g"``."""

    cpu: int = 0
    memory: str | int = 0
    disk: str | int = 0
    device: cluster_pb2.DeviceConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cpu, int):  # Iris's proto field is an integer
            raise TypeError(f"cpu must be an int, got {self.cpu!r}")

    @property
    def memory_bytes(self) -> int:
        return _size(self.memory)

    @property
    def disk_bytes(self) -> int:
        return _size(self.disk)


@dataclass
class EnvironmentSpec:
    pip_packages: Sequence[str] | None = None
    env_vars: dict[str, str] | None = None
    extras: Sequence[str] | None = None


class ConstraintOp(IntEnum):
    EQ = 0
    NE = 1
    EXISTS = 2
    NOT_EXISTS = 3
    GT = 4
    GE = 5
    LT = 6
    LE = 7
    IN = 8


@dataclass(frozen=True)
class Constraint:
    key: str
    op: ConstraintOp
    value: str | int | float | None = None
    values: tuple[str | int | float, ...] | None = None


def preemptible_constraint(preemptible: bool = True) -> Constraint:
    return Constraint(key="preemptible", op=ConstraintOp.EQ, value=str(preemptible).lower())


def region_constraint(regions: list[str]) -> Constraint:
    if isinstance(regions, str):
        raise TypeError("region_constraint() takes a list of regions, not a string")
    if not regions:
        raise ValueError("regions must be non-empty")
    if len(regions) == 1:
        return Constraint(key="region", op=ConstraintOp.EQ, value=regions[0])
    return Constraint(key="region", op=ConstraintOp.IN, values=tuple(regions))


def gpu_device(variant: str, count: int = 1) -> cluster_pb2.DeviceConfig:
    return cluster_pb2.DeviceConfig(gpu=cluster_pb2.GpuDevice(variant=variant, count=count))


_CHIPS_PER_HOST = {"v4": 4, "v5p": 4, "v5litepod": 4, "v6e": 4}


def tpu_device(variant: str, count: int | None = None) -> cluster_pb2.DeviceConfig:
    if count is None:
        count = _CHIPS_PER_HOST.get(variant.split("-")[0], 0)
    return cluster_pb2.DeviceConfig(tpu=cluster_pb2.TpuDevice(variant=variant, count=count))


def is_job_finished(state: int) -> bool:
    return state in (
        cluster_pb2.JOB_STATE_SUCCEEDED,
        cluster_pb2.JOB_STATE_FAILED,
        cluster_pb2.JOB_STATE_KILLED,
        cluster_pb2.JOB_STATE_WORKER_FAILED,
        cluster_pb2.JOB_STATE_UNSCHEDULABLE,
    )


# What a callable entrypoint's task runs (the stand-in's own runner: load, call, and on an
# exception print its traceback and exit 1).
_RUNNER = """\
import os, sys, traceback
import cloudpickle
try:
    with open(os.path.join(os.environ["IRIS_WORKDIR"], "_callable.pkl"), "rb") as f:
        fn, args, kwargs = cloudpickle.load(f)
    fn(*args, **kwargs)
except Exception:
    traceback.print_exc()
    sys.exit(1)
"""


class Entrypoint:
    """A task's command, plus files written to ``$IRIS_WORKDIR`` before it runs."""

    def __init__(self, *, command: list[str], workdir_files: dict[str, bytes] | None = None):
        if not command:
            raise ValueError("Command must have at least one argument")
        self.command = command
        self.workdir_files: dict[str, bytes] = workdir_files or {}

    @classmethod
    def from_callable(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Entrypoint:
        return cls(
            command=["bash", "-c", "exec $IRIS_PYTHON -u $IRIS_WORKDIR/_callable_runner.py"],
            workdir_files={
                "_callable.pkl": cloudpickle.dumps((fn, args, kwargs)),
                "_callable_runner.py": _RUNNER.encode(),
            },
        )

    @classmethod
    def from_command(cls, *argv: str) -> Entrypoint:
        return cls(command=list(argv))

    def resolve(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        payload = self.workdir_files.get("_callable.pkl")
        if payload is None:
            raise ValueError("Not a callable entrypoint")
        return cloudpickle.loads(payload)  # type: ignore[no-any-return]


def python_executable() -> str:
    return os.environ.get("IRIS_PYTHON", sys.executable)
