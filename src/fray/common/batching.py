"""How many items make one batch: bounded by count and by size, never empty."""

from __future__ import annotations

from collections.abc import Iterable


def batch_length(sizes: Iterable[int], max_count: int, max_bytes: int) -> int:
    """How many leading items (of these sizes) go in one batch: at most `max_count` items and
    `max_bytes` in all, but at least one item when there is one (a large item goes alone)."""
    count = total = 0
    for size in sizes:
        if count >= max_count:
            break
        total += size
        if count and total > max_bytes:
            break
        count += 1
    return count
