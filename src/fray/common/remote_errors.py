"""Exceptions that cross a process boundary, the one way fray moves them.

The process where the exception happened packs it (:func:`pack_exception`: its type, message,
traceback text and, when it pickles, the exception itself); the process that receives it
rebuilds it (:func:`unpack_exception`) with the remote traceback attached as ``__cause__``
(:func:`with_remote_traceback`), so the caller sees the original type and where it was raised.
Used by fray's executors and client (through :mod:`fray.wire.payload`), the Ray job context and
fray.v2's local and Ray backends.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cloudpickle

from fray.errors import RemoteTraceback

__all__ = [
    "PackedError",
    "pack_exception",
    "qualified_type",
    "rebuild_exception",
    "unpack_exception",
    "with_remote_traceback",
]

_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True)
class PackedError:
    """An exception ready to travel: plain strings, and its pickle when it has one."""

    type_name: str  # the exception class's module-qualified name
    message: str  # str(exc), or a stand-in when it cannot be printed
    traceback: str  # the formatted traceback, as Python prints it
    pickled: bytes = b""  # cloudpickle of the exception; empty when it does not pickle

    @property
    def summary(self) -> str:
        """``"TYPE: message"``, as the traceback's last line reads (builtins unqualified)."""
        name = self.type_name.removeprefix("builtins.")
        return f"{name}: {self.message}" if self.message else name


def qualified_type(exc: BaseException) -> str:
    """``module.QualName`` of the exception's class."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def pack_exception(exc: BaseException, protocol: int | None = None) -> PackedError:
    """Describe ``exc`` for another process; never raises, whatever ``exc`` does when printed
    or pickled. Strings are safe for any transport (no lone surrogates)."""
    try:
        pickled = cloudpickle.dumps(exc, protocol=protocol)
    except Exception:
        pickled = b""
    return PackedError(
        type_name=qualified_type(exc),
        message=_printable(str, exc),
        traceback=_printable(lambda e: "".join(traceback.format_exception(e)), exc),
        pickled=pickled,
    )


def _printable(describe: Callable[[BaseException], str], exc: BaseException) -> str:
    """``describe(exc)``, or a stand-in when the exception cannot even be printed."""
    try:
        return describe(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    except Exception as inner:
        return f"<{qualified_type(exc)}: unprintable ({type(inner).__qualname__})>"


def unpack_exception(pickled: bytes, traceback_text: str) -> BaseException | None:
    """The exception ``pickled`` holds, with ``traceback_text`` as its ``__cause__``; ``None``
    when there is none or it cannot be unpickled here (e.g. its class is missing)."""
    if not pickled:
        return None
    try:
        exc = pickle.loads(pickled)
    except Exception:
        return None
    if not isinstance(exc, BaseException):
        return None
    return with_remote_traceback(exc, traceback_text)


def rebuild_exception(packed: PackedError) -> BaseException:
    """The packed exception with its remote traceback as ``__cause__``; when it cannot be
    rebuilt here, a ``RuntimeError("TYPE: message")`` with that traceback stands in."""
    exc = unpack_exception(packed.pickled, packed.traceback)
    if exc is None:
        exc = with_remote_traceback(RuntimeError(packed.summary), packed.traceback)
    return exc


def with_remote_traceback(exc: _E, traceback_text: str) -> _E:
    """Attach ``traceback_text`` (what the remote side printed) to ``exc`` as its ``__cause__``,
    a :class:`~fray.errors.RemoteTraceback`; returns ``exc``, ready to raise."""
    exc.__cause__ = RemoteTraceback(traceback_text)
    return exc
