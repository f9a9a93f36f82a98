"""Plain value types of fray.v2: ids, job status, resources, environment and entrypoints.

Nothing here talks to a backend; backends read these values and map them onto what they
can schedule (see :mod:`fray.v2.backends.ray_resources` for Ray).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType

from fray.common.accelerators import tpu_chips_per_host
from fray.common.job_process import run_command
from fray.common.sizes import parse_bytes

__all__ = [
    "DEVICE_TYPES",
    "Entrypoint",
    "EnvironmentSpec",
    "JobId",
    "JobStatus",
    "Namespace",
    "ResourceSpec",
    "parse_bytes",  # fray.common.sizes's, which ResourceSpec reads sizes with
    "tpu_chips_per_host",
]

JobId = NewType("JobId", str)
Namespace = NewType("Namespace", str)

DEVICE_TYPES = ("cpu", "gpu", "tpu")


class JobStatus(StrEnum):
    """Where a job is in its life; the last three are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"

    def is_finished(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``killed``."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.KILLED)


@dataclass(frozen=True)
class ResourceSpec:
    """What one replica of a job (or one pool worker) needs.

    ``memory`` and ``disk`` take bytes or strings such as ``"8g"`` (read by
    :func:`fray.common.sizes.parse_bytes`: units are powers of 1024) and are stored as ints
    (0 means no request). ``replicas`` is how many copies of a job's entrypoint run; worker
    pools size themselves with ``num_workers`` instead. ``device_type`` is ``"cpu"``,
    ``"gpu"`` or ``"tpu"``; accelerators need ``device_count >= 1`` and a
    ``device_variant`` (``"auto"`` lets a GPU be any kind). ``regions`` restricts placement
    to those regions (empty: anywhere).
    """

    cpu: float = 1.0
    memory: int | str = 0
    disk: int | str = 0
    replicas: int = 1
    preemptible: bool = True
    regions: Sequence[str] = ()
    device_type: str = "cpu"
    device_variant: str | None = None
    device_count: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", parse_bytes(self.memory))
        object.__setattr__(self, "disk", parse_bytes(self.disk))
        if isinstance(self.regions, str):
            raise ValueError("regions must be a sequence of region names, not a string")
        object.__setattr__(self, "regions", tuple(self.regions))
        for region in self.regions:
            if not isinstance(region, str) or not region or "|" in region:
                raise ValueError(f"a region must be a non-empty name without '|', got {region!r}")
        if not math.isfinite(self.cpu) or self.cpu < 0:
            raise ValueError(f"cpu must be a finite number >= 0, got {self.cpu}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(
                f"device_type must be one of {', '.join(DEVICE_TYPES)}, got {self.device_type!r}"
            )
        if self.device_type == "cpu":
            if self.device_count or self.device_variant:
                raise ValueError("a cpu ResourceSpec takes no device_variant or device_count")
        else:
            if self.device_count < 1:
                raise ValueError(f"a {self.device_type} needs device_count >= 1")
            if not self.device_variant:
                raise ValueError(f"a {self.device_type} needs a device_variant")
            if self.device_type == "tpu":
                tpu_chips_per_host(self.device_variant)  # checks the variant

    @property
    def memory_bytes(self) -> int:
        """``memory`` as an int (it always is one after construction)."""
        return int(self.memory)

    @property
    def disk_bytes(self) -> int:
        """``disk`` as an int (it always is one after construction)."""
        return int(self.disk)

    @classmethod
    def with_tpu(cls, variant: str, replicas: int = 1, **kwargs: Any) -> ResourceSpec:
        """A TPU slice ``variant`` such as ``"v4-8"``; each replica gets one host's chips."""
        return cls(
            replicas=replicas,
            device_type="tpu",
            device_variant=variant,
            device_count=tpu_chips_per_host(variant),
            **kwargs,
        )

    @classmethod
    def with_gpu(cls, variant: str = "auto", count: int = 1, **kwargs: Any) -> ResourceSpec:
        """``count`` GPUs of kind ``variant`` (e.g. ``"H100"``; ``"auto"``: any kind)."""
        return cls(device_type="gpu", device_variant=variant, device_count=count, **kwargs)

    @classmethod
    def with_cpu(cls, cpu: float = 1.0, **kwargs: Any) -> ResourceSpec:
        """CPUs only; the other fields as keywords (``memory="8g"``, ...)."""
        return cls(cpu=cpu, **kwargs)


@dataclass(frozen=True)
class EnvironmentSpec:
    """Where and with what a job runs.

    ``workspace`` is a directory the job runs in (its working directory, put on
    ``sys.path``); ``env_vars`` are set for the job; ``pip_packages`` and ``extras`` (uv
    extras of the workspace project) name dependencies a backend installs if it can: see
    each backend for which it honours.
    """

    workspace: str | None = None
    pip_packages: Sequence[str] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)
    extras: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("pip_packages", "extras"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of strings, not a string")
            object.__setattr__(self, name, tuple(value))
        env = dict(self.env_vars)
        for key, val in env.items():
            if not isinstance(key, str) or not isinstance(val, str):
                raise ValueError(f"env_vars must map str to str, got {key!r}: {val!r}")
        object.__setattr__(self, "env_vars", env)


def _check_args(args: Any, where: str) -> tuple[Any, ...]:
    """``args`` as a tuple; a ``str`` or ``bytes`` (a classic slip for one argument) is a
    TypeError naming the mistake."""
    if isinstance(args, str | bytes | bytearray):
        raise TypeError(
            f"{where} takes args as a sequence of arguments, got the {type(args).__name__} "
            f"{args!r}: write ({args!r},) or [{args!r}] to pass it as one argument"
        )
    return tuple(args)


@dataclass(frozen=True)
class Entrypoint:
    """A job's code: ``callable(*args, **kwargs)``, run in the job's own process.

    :meth:`from_binary` makes one that runs a program (``command`` is then its argv; it is
    ``None`` for other entrypoints).
    """

    callable: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    command: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not callable(self.callable):
            raise TypeError(f"an Entrypoint needs a callable, got {self.callable!r}")
        object.__setattr__(self, "args", _check_args(self.args, "Entrypoint"))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))

    @classmethod
    def from_callable(
        cls,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Entrypoint:
        """An entrypoint calling ``fn(*args, **kwargs)``."""
        return cls(
            callable=fn, args=_check_args(args, "Entrypoint.from_callable"), kwargs=kwargs or {}
        )

    @classmethod
    def from_binary(cls, command: str, args: Sequence[str] = ()) -> Entrypoint:
        """An entrypoint running the program ``command`` with ``args`` (searched on the job's
        PATH unless it names a path); the job exits as the program does
        (:func:`fray.common.job_process.run_command`)."""
        if not isinstance(command, str) or not command:
            raise TypeError(f"from_binary needs a program name or path, got {command!r}")
        args = _check_args(args, "Entrypoint.from_binary")
        for arg in args:
            if not isinstance(arg, str | os.PathLike):
                raise TypeError(f"from_binary's args must be strings, got {arg!r}")
        argv = (command, *(os.fspath(a) for a in args))
        return cls(callable=run_command, args=(list(argv),), command=argv)
