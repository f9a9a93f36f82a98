"""Run Python functions and actors through one API, on a thread pool, on Ray, or on fray.

    from fray.job import create_job_ctx

    ctx = create_job_ctx("threadpool", max_workers=4)
    futures = [ctx.run(pow, i, 2) for i in range(10)]
    print(ctx.get(futures))

See :class:`JobContext` (:mod:`fray.job.context`) for the operations (the same on every
backend: ``options``, ``close`` and ``with ctx:`` included; :mod:`fray.job.options` for the
local backends' options), :func:`create_job_ctx` (:mod:`fray.job.factory`) for the backends and
:func:`progress` (:mod:`fray.job.progress`) for a progress bar over many futures.
Importing this package imports neither Ray nor the RPC client (``fray.client``);
``RayContext`` is loaded on first access.
"""

from typing import Any

from fray.job.context import JobContext
from fray.job.factory import (
    create_job_ctx,
    default_job_ctx,
    get_default_job_ctx,
    set_default_job_ctx,
)
from fray.job.local import LocalRef, SyncContext, ThreadPoolContext
from fray.job.progress import progress

__all__ = [
    "JobContext",
    "LocalRef",
    "RayContext",
    "SyncContext",
    "ThreadPoolContext",
    "create_job_ctx",
    "default_job_ctx",
    "get_default_job_ctx",
    "progress",
    "set_default_job_ctx",
]


def __getattr__(name: str) -> Any:
    if name == "RayContext":
        from fray.job.ray_ctx import RayContext

        return RayContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
