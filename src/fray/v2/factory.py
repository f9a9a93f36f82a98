"""Building fray.v2 clusters from spec strings, and the cluster in force.

``create_cluster(spec)`` builds a cluster from a spec string; ``current_cluster()`` returns
the one in force: a context-local override (:func:`use_cluster`) first, then
``$FRAY_CLUSTER_SPEC``, else a local cluster. Specs:

* ``""`` or ``"local"`` (optionally ``"local?namespace=NAME"``): :mod:`fray.v2.backends.local`
* ``"ray"``, ``"ray?namespace=NAME"``, ``"ray?address=ADDRESS"`` (both may be combined):
  :mod:`fray.v2.backends.ray`
* ``"fray?address=URL"``, ``"fray?namespace=NAME&address=URL"`` (``address`` defaults to
  ``$FRAY_CONTROLLER_ADDRESS``; the token comes from ``$FRAY_TOKEN``): fray's own controller,
  :mod:`fray.v2.backends.fray`
* ``"iris"`` (a local Iris), ``"iris?address=URL"`` (an Iris controller), with
  ``&namespace=NAME`` and ``&workspace=DIR`` (the directory Iris bundles for the jobs):
  :mod:`fray.v2.backends.iris`; needs Marin's ``iris`` package.

Backends are imported only when chosen, so ``import fray.v2`` does not import Ray; no
backend imports this module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar, Token
from urllib.parse import parse_qsl

from fray.common.net import CONTROLLER_ADDRESS_ENV
from fray.v2.cluster import CLUSTER_SPEC_ENV, DEFAULT_NAMESPACE, Cluster
from fray.v2.types import Namespace

__all__ = [
    "SPEC_FORMS",
    "create_cluster",
    "current_cluster",
    "parse_cluster_spec",
    "set_current_cluster",
    "use_cluster",
]

SPEC_FORMS = (
    '"" or "local"',
    '"local?namespace=NAME"',
    '"ray"',
    '"ray?namespace=NAME"',
    '"ray?address=ADDRESS"',
    '"ray?namespace=NAME&address=ADDRESS"',
    '"fray" (with $FRAY_CONTROLLER_ADDRESS set)',
    '"fray?address=URL"',
    '"fray?namespace=NAME&address=URL"',
    '"iris" or "iris?address=URL&namespace=NAME" (needs Marin\'s iris package)',
)
_OPTIONS = {
    "local": ("namespace",),
    "ray": ("namespace", "address"),
    "fray": ("namespace", "address"),
    "iris": ("namespace", "address", "workspace"),
}


def _bad_spec(spec: str, why: str) -> ValueError:
    return ValueError(f"bad cluster spec {spec!r}: {why}; accepted forms: {', '.join(SPEC_FORMS)}")


def parse_cluster_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a spec into ``(backend, options)``; ``ValueError`` naming the accepted forms."""
    backend, sep, query = spec.strip().partition("?")
    backend = backend or "local"
    if backend not in _OPTIONS:
        raise _bad_spec(spec, f"unknown backend {backend!r}")
    if sep and not query:
        raise _bad_spec(spec, "empty option list after '?'")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise _bad_spec(spec, f"malformed options ({exc})") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS[backend]:
            raise _bad_spec(spec, f"unknown option {key!r} for {backend!r}")
        if key in options:
            raise _bad_spec(spec, f"option {key!r} given twice")
        if not value:
            raise _bad_spec(spec, f"option {key!r} needs a value")
        options[key] = value
    return backend, options


def create_cluster(spec: str = "local") -> Cluster:
    """Create a new cluster object from ``spec`` (see the module docstring for the forms)."""
    backend, options = parse_cluster_spec(spec)
    if backend == "local":
        from fray.v2.backends.local import LocalProcessCluster

        return LocalProcessCluster(namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE)))
    if backend == "ray":
        from fray.v2.backends.ray import RayCluster

        return RayCluster(
            namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE)),
            address=options.get("address"),
        )
    if backend == "fray":
        address = options.get("address") or os.environ.get(CONTROLLER_ADDRESS_ENV)
        if not address:
            raise ValueError(
                f"cluster spec {spec!r} names no controller: give one as "
                f'"fray?address=http://HOST:PORT" or set ${CONTROLLER_ADDRESS_ENV}'
            )
        from fray.v2.backends.fray.cluster import FrayCluster

        return FrayCluster(
            address, namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE))
        )
    if importlib.util.find_spec("iris") is None:
        raise ValueError(
            f"cluster spec {spec!r} needs Marin's 'iris' package, which is not installed; "
            f"use one of: {', '.join(SPEC_FORMS[:-1])}"
        )
    from fray.v2.backends.iris import IrisCluster

    return IrisCluster(
        namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE)),
        address=options.get("address"),
        workspace=options.get("workspace"),
    )


_override: ContextVar[Cluster | None] = ContextVar("fray_v2_cluster", default=None)
_cache_lock = threading.Lock()
_cache: dict[str, Cluster] = {}


def current_cluster() -> Cluster:
    """The cluster in force: the :func:`use_cluster` override of this thread or task, else
    the one ``$FRAY_CLUSTER_SPEC`` names (default local), created once per spec and reused."""
    cluster = _override.get()
    if cluster is not None:
        return cluster
    spec = os.environ.get(CLUSTER_SPEC_ENV, "")
    with _cache_lock:
        cluster = _cache.get(spec)
        if cluster is None or getattr(cluster, "is_shut_down", False):  # e.g. left a `with`
            cluster = _cache[spec] = create_cluster(spec)
        return cluster


def set_current_cluster(cluster: Cluster | None) -> Token[Cluster | None]:
    """Override (``None``: clear) the current cluster; returns a token for ``reset``."""
    return _override.set(cluster)


@contextlib.contextmanager
def use_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """Make ``cluster`` the current cluster inside the ``with`` block (context-local)."""
    token = _override.set(cluster)
    try:
        yield cluster
    finally:
        _override.reset(token)
