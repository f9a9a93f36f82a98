"""Sizes in bytes: the one parser behind ``ResourceSpec(memory=...)``, ``fray worker
--resources memory=...`` and the ``FRAY_*_BYTES`` environment variables."""

from __future__ import annotations

import logging
import os
import re
from decimal import Decimal, localcontext
from typing import overload

__all__ = ["MAX_BYTES", "bytes_from_env", "parse_bytes"]

logger = logging.getLogger(__name__)

MAX_BYTES = 2**63 - 1  # what fits the wire's int64 fields
_UNITS = "kmgtp"
_SIZE = re.compile(
    r"(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)\s*(?P<unit>[kmgtp]?)(?P<i>i?)b?",
    re.IGNORECASE,
)
_EXAMPLES = "e.g. '512m', '8g', '1.5GiB', '2e3k' or 4096"


def parse_bytes(value: int | str) -> int:
    """A size in bytes, from an int or from a string such as ``"512m"``, ``"8GiB"``.

    The semantics, one set for every place fray reads a size:

    * **Units are binary**: ``k``, ``m``, ``g``, ``t``, ``p`` are 1024, 1024**2, ... 1024**5
      bytes, as Docker, the JVM and Slurm read ``"8g"``. ``"8g"``, ``"8gb"``, ``"8gi"`` and
      ``"8GiB"`` are all 8 * 1024**3: an ``i`` and a ``b`` after the unit change nothing
      (Dask and Kubernetes read ``"8GB"``/``"8G"`` as 8 * 1000**3; fray does not, since its
      sizes are memory requests, always counted in powers of two). A bare number, or one
      followed by ``b`` alone, is bytes; ``"8ib"`` is an error.
    * Case does not matter; spaces around the text and between number and unit are allowed.
    * The number may have decimals and an exponent: ``"1.5g"``, ``".5k"``, ``"1e3k"``
      (1000 KiB = 1,024,000 bytes). The result is rounded down to whole bytes.
    * ``int`` values are taken as bytes (``bool`` and ``float`` are refused).

    Raises ``ValueError`` naming the text for anything else: unknown units, ``inf``/``nan``,
    negative sizes, and sizes of 2**63 bytes or more (:data:`MAX_BYTES` is the largest).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a size must be an int or a string ({_EXAMPLES}), got {value!r}")
    if isinstance(value, int):
        return _checked(Decimal(value), value)
    match = _SIZE.fullmatch(value.strip())
    if match is None or (match["i"] and not match["unit"]):
        raise ValueError(
            f"cannot parse {value!r} as a size: use bytes or a number with a unit k, m, g, t or "
            f"p (powers of 1024; case, 'i' and 'b' do not matter), {_EXAMPLES}"
        )
    number = Decimal(match["number"])
    if number.adjusted() > 30:  # keeps the arithmetic below small whatever the exponent
        raise ValueError(f"size {value!r} is too large (the most is {MAX_BYTES} bytes)")
    unit = match["unit"].lower()
    power = _UNITS.index(unit) + 1 if unit else 0
    with localcontext() as exact:
        exact.prec = 100  # every digit that can reach a whole byte below MAX_BYTES
        return _checked(number * 1024**power, value)


@overload
def bytes_from_env(name: str, default: int) -> int: ...
@overload
def bytes_from_env(name: str, default: None) -> int | None: ...
def bytes_from_env(name: str, default: int | None) -> int | None:
    """The size in environment variable `name` (`parse_bytes`); `default` when it is unset or
    empty, and, with a warning, when it does not parse."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse_bytes(text)
    except ValueError as exc:
        logger.warning("ignoring %s: %s", name, exc)
        return default


def _checked(size: Decimal, value: int | str) -> int:
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    if size > MAX_BYTES:
        raise ValueError(f"size {value!r} is too large (the most is {MAX_BYTES} bytes)")
    return int(size)
