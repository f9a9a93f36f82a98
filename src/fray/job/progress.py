"""A progress bar for waiting on many futures, in the spirit of Dask's ``progress()``:

    futures = [ctx.run(score, seed) for seed in range(1000)]
    progress(futures, ctx)          # blocks, drawing "tasks: 40%|####      | 400/1000 [...]"
    results = ctx.get(futures)

It only waits (through ``ctx.wait``, so on every backend; without ``ctx`` the futures must be
``concurrent.futures.Future``s, as fray's, the thread pool's and sync's are); results and errors
are read afterwards with ``get``. The bar is tqdm's, on stderr.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
from collections.abc import Sequence
from typing import IO, Any

from tqdm import tqdm

from fray.job.context import JobContext

__all__ = ["progress"]


def progress(
    futures: Sequence[Any],
    ctx: JobContext | None = None,
    *,
    desc: str = "tasks",
    interval: float = 0.2,
    file: IO[str] | None = None,
) -> None:
    """Block until every future is done (finished, failed or cancelled), drawing a bar of how
    many are. ``ctx`` is the context that made them (needed for Ray refs); ``interval`` is how
    often (seconds) the bar is brought up to date at least."""
    pending = list(futures)
    with tqdm(total=len(pending), desc=desc, unit="task", file=file or sys.stderr) as bar:
        while pending:
            if ctx is not None:
                ready, pending = ctx.wait(pending, num_returns=len(pending), timeout=interval)
                count = len(ready)
            else:
                done, rest = cf.wait(pending, timeout=interval, return_when=cf.FIRST_COMPLETED)
                pending, count = list(rest), len(done)
            if count:
                bar.update(count)
