"""Choosing and building a job context, and the default context of a thread or task.

``create_job_ctx(kind)`` builds a backend's :class:`~fray.job.context.JobContext`;
``get_default_job_ctx`` / ``set_default_job_ctx`` / ``default_job_ctx`` hold the one code
uses when it is not handed one. Ray (:mod:`fray.job.ray_ctx`) and the RPC client
(``fray.client.context``) are imported only when their backend is chosen; neither imports
this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Any

from fray.common.net import CONTROLLER_ADDRESS_ENV, DEFAULT_CONTROLLER_ADDRESS
from fray.job.context import JobContext
from fray.job.local import SyncContext, ThreadPoolContext

__all__ = [
    "CONTEXT_TYPES",
    "create_job_ctx",
    "default_job_ctx",
    "get_default_job_ctx",
    "set_default_job_ctx",
]

CONTEXT_TYPES = ("auto", "sync", "threadpool", "ray", "fray")


def _ray_is_initialized() -> bool:
    """True when Ray is already imported and initialised; never imports Ray itself."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def create_job_ctx(
    context_type: str = "auto",
    max_workers: int = 1,
    controller_address: str | None = None,
    **ray_options: Any,
) -> JobContext:
    """Create a job context of the given type.

    ``context_type`` is one of :data:`CONTEXT_TYPES`; ``"auto"`` picks fray when
    ``$FRAY_CONTROLLER_ADDRESS`` is set (or ``controller_address`` is given), else Ray when Ray
    is already imported and initialised in this process, else a thread pool. ``max_workers``
    sizes the thread pool. ``"fray"`` connects to ``controller_address``, by default
    ``$FRAY_CONTROLLER_ADDRESS`` (as ``ray.init()`` reads ``RAY_ADDRESS``), else
    ``http://127.0.0.1:7625``; it fails within a few seconds when no fray controller answers
    there. The remaining keyword options go to ``RayContext`` (task options such as
    ``num_cpus``) or to ``FrayContext``; the local backends reject them, except under
    ``"auto"``.
    """
    if context_type == "auto":
        if controller_address or os.environ.get(CONTROLLER_ADDRESS_ENV):
            context_type = "fray"
        elif _ray_is_initialized():
            context_type = "ray"
        else:
            ray_options = {}
            context_type = "threadpool"

    if context_type in ("sync", "threadpool"):
        if ray_options:
            raise ValueError(f"{context_type!r} takes no options, got {sorted(ray_options)}")
        return SyncContext() if context_type == "sync" else ThreadPoolContext(max_workers)
    if context_type == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError("context type 'ray' needs Ray: pip install 'fray[ray]'") from None
        from fray.job.ray_ctx import RayContext

        return RayContext(ray_options=ray_options)
    if context_type == "fray":
        address = (
            controller_address
            or os.environ.get(CONTROLLER_ADDRESS_ENV)
            or DEFAULT_CONTROLLER_ADDRESS
        )
        from fray.client.context import FrayContext

        ctx: JobContext = FrayContext(address, **ray_options)
        return ctx
    raise ValueError(
        f"unknown context type {context_type!r}; expected one of {', '.join(CONTEXT_TYPES)}"
    )


_default_ctx: ContextVar[JobContext | None] = ContextVar("fray_default_job_ctx", default=None)
_fallback_lock = threading.Lock()
_fallbacks: dict[str, JobContext] = {}


def _fallback_ctx() -> JobContext:
    """The process-wide context used when no default is set, cached per backend."""
    address = os.environ.get(CONTROLLER_ADDRESS_ENV)
    if address:  # code running on a fray worker: work goes to the same controller
        from fray.client.context import context_for

        return context_for(address)
    kind = "ray" if _ray_is_initialized() else "threadpool"
    with _fallback_lock:
        ctx = _fallbacks.get(kind)
        if ctx is None:
            if kind == "ray":
                ctx = create_job_ctx("ray")
            else:
                ctx = create_job_ctx("threadpool", max_workers=min(32, (os.cpu_count() or 1) + 4))
            _fallbacks[kind] = ctx
        return ctx


def get_default_job_ctx() -> JobContext:
    """Return the default job context of the current thread or async task.

    When none was set, returns a shared process-wide context: in a fray task or actor (where
    ``$FRAY_CONTROLLER_ADDRESS`` is set) a :class:`FrayContext` bound to the same controller;
    else one chosen like ``"auto"``: a :class:`RayContext` when Ray is initialised, else a
    thread pool sized like ``ThreadPoolExecutor``'s default. Each is created on first use and
    then reused.
    """
    ctx = _default_ctx.get()
    return ctx if ctx is not None else _fallback_ctx()


def set_default_job_ctx(ctx: JobContext | None) -> Token[JobContext | None]:
    """Set (or with ``None``, clear) the default context; returns a token for ``reset``."""
    return _default_ctx.set(ctx)


@contextlib.contextmanager
def default_job_ctx(ctx: JobContext) -> Iterator[JobContext]:
    """Make ``ctx`` the default job context inside the ``with`` block, then restore.

    Uses a ``ContextVar``: the setting is local to the current thread or async task.
    """
    token = _default_ctx.set(ctx)
    try:
        yield ctx
    finally:
        _default_ctx.reset(token)
