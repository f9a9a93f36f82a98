"""fray's own service, seen from the job-context API: ``FrayContext`` and friends.

The code lives in one package per process (see ``docs/design.md``, "Where things live"):
``fray.controller`` (the task state machine and its Connect service), ``fray.worker`` (the
worker process and its executors), ``fray.client`` (``FrayContext``, the direct path, actor
handles) and ``fray.wire`` (what they share: generated protobuf code, serving, payloads). This
module keeps the names users import from ``fray.job.rpc``, loaded on first access.
"""

from typing import Any

_EXPORTS = {
    "ControllerServer": "fray.controller.server",
    "ControllerService": "fray.controller.service",
    "FrayContext": "fray.client.context",
    "FrayFuture": "fray.client.context",
    "LocalFrayCluster": "fray.local_cluster",
    "ObjectRef": "fray.wire.payload",
    "Worker": "fray.worker.worker",
}
_RENAMED = {"LocalCluster": "LocalFrayCluster"}  # old names that keep working
__all__ = sorted([*_EXPORTS, *_RENAMED])


def __getattr__(name: str) -> Any:
    name = _RENAMED.get(name, name)
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fray.job.rpc' has no attribute {name!r}")
