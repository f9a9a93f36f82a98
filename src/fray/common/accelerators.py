"""Accelerator facts every part of fray agrees on (no dependencies).

``tpu_chips_per_host``: a TPU slice variant's chips per host, which fray.v2's
``ResourceSpec.with_tpu`` asks for and a worker labelled ``tpu=VARIANT`` offers as ``tpus``.
"""

from __future__ import annotations

import re

__all__ = ["tpu_chips_per_host"]

# Chips in one host of a TPU slice, by generation: v2-v5p count TensorCores in the slice name
# (two per chip), v5e/v6e count chips. Hosts hold 4 chips, except single-host v5e/v6e
# slices of up to 8 chips.
_TPU_VARIANT = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)$")


def tpu_chips_per_host(variant: str) -> int:
    """Chips a single host of a TPU slice ``variant`` (e.g. ``"v4-8"``, ``"v6e-4"``) holds."""
    match = _TPU_VARIANT.match(variant)
    if match is None:
        raise ValueError(
            f"unknown TPU variant {variant!r}; expected GENERATION-SIZE with a generation of "
            "v2, v3, v4, v5p, v5litepod, v5e or v6e (e.g. 'v4-8', 'v5litepod-16', 'v6e-4')"
        )
    generation, size = match.group(1), int(match.group(2))
    if size < 1:
        raise ValueError(f"TPU variant {variant!r} has no chips")
    if generation in ("v5litepod", "v5e", "v6e"):
        return size if size <= 8 else 4
    return max(1, min(size // 2, 4))
