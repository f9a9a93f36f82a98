"""Fray RPC: the Connect controller, its workers and the FrayContext client.

- `ControllerServer` / `ControllerService` (`fray.job.rpc.controller`): the task queue, worker
  registry and object store, served over Connect by uvicorn;
- `Worker` (`fray.job.rpc.worker`): leases tasks and runs them in executor processes;
- `FrayContext` (`fray.job.rpc.context`): the JobContext that submits work to a controller;
- `LocalCluster` (`fray.job.rpc.local_cluster`): a controller and worker processes on loopback.
"""

from typing import Any

_EXPORTS = {
    "ControllerServer": "fray.job.rpc.controller",
    "ControllerService": "fray.job.rpc.controller",
    "FrayContext": "fray.job.rpc.context",
    "FrayFuture": "fray.job.rpc.context",
    "LocalCluster": "fray.job.rpc.local_cluster",
    "ObjectRef": "fray.job.rpc.payload",
    "Worker": "fray.job.rpc.worker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that executor processes importing fray.job.rpc.executor stay light.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fray.job.rpc' has no attribute {name!r}")
