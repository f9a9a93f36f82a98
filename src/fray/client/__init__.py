"""The client side of fray's service: ``FrayContext``, the ``JobContext`` for a controller.

- ``context``: ``FrayContext`` and ``FrayFuture``;
- ``direct``: the direct path, tasks sent straight to a worker's free slot;
- ``actors``: actor handles whose calls go straight to the hosting worker.

Imports ``fray.wire`` and the ``fray.job`` protocol; never the controller or the worker.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("FrayContext", "FrayFuture"):
        from fray.client import context

        return getattr(context, name)
    raise AttributeError(f"module 'fray.client' has no attribute {name!r}")
