"""Placement: what a piece of work needs of a worker, whether a worker has it, and why none does.

A worker offers *capacities* (numbers: ``cpus``, ``memory`` in bytes, ``gpus``, any other
amount) and *labels* (strings: ``gpu_type``, ``zone``, ...). A task, actor or job replica
asks for a :class:`Need`: amounts it holds on its worker while it lives, and labels the worker
must carry with those values (a value ``"a|b"`` accepts either: fray.v2's ``regions``).
A worker can take it *now* when its free capacities
(offered minus what its current work holds) cover every amount and every label matches; it
could *ever* take it when its offered capacities do. Work that asks for nothing needs only a
free slot (tasks) or a live worker (actors, jobs): the default, so plain tasks cost nothing
here.

This module decides nothing about queues or order (see ``tasks`` and ``task_lifecycle``);
it is the one place the fit is computed, shared by tasks, actors and jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fray.wire.limits import MAX_ID_LENGTH

__all__ = [
    "NOTHING",
    "Need",
    "Offer",
    "Reasons",
    "could_fit",
    "fits_now",
    "free",
    "hold",
    "release",
    "unplaceable_reason",
]

_EPSILON = 1e-9  # amounts are floats (cpus=0.25): sums of them must not refuse an exact fit
_MAX_KEYS = 64  # resources or labels one need may name


class Offer(Protocol):
    """What placement reads of a worker (``records.WorkerRecord`` is one)."""

    capacities: dict[str, float]
    used: dict[str, float]
    labels: dict[str, str]
    draining: bool


@dataclass(frozen=True)
class Need:
    """What one piece of work asks of its worker: amounts (sorted, all > 0) and labels.

    Hashable, so the task queue keeps one FIFO per distinct need (few in practice); the hash
    is computed once (a lease looks needs up in dicts several times per task).
    """

    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.resources, self.labels)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Need], tuple[Any, ...]]:  # the hash is per process
        return (Need, (self.resources, self.labels))

    @classmethod
    def of(
        cls, resources: Mapping[str, float] | None = None, labels: Mapping[str, str] | None = None
    ) -> Need:
        """A need from a request's maps; ``ValueError`` naming a bad amount or key (the
        converters turn it into ``records.InvalidRequest``).

        Zero amounts are dropped (asking for ``gpus=0`` is asking for nothing).
        """
        resources = dict(resources or {})
        labels = dict(labels or {})
        if len(resources) > _MAX_KEYS or len(labels) > _MAX_KEYS:
            raise ValueError(f"at most {_MAX_KEYS} resources and {_MAX_KEYS} labels")
        for key in (*resources, *labels):
            if not key or len(key) > MAX_ID_LENGTH:
                raise ValueError(f"resource and label names must be 1 to {MAX_ID_LENGTH} long")
        for key, amount in resources.items():
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"resource {key}={amount!r} must be a finite amount >= 0")
        for key, value in labels.items():
            if len(value) > MAX_ID_LENGTH:
                raise ValueError(f"label {key} longer than {MAX_ID_LENGTH} characters")
        return cls(
            tuple(sorted((k, float(v)) for k, v in resources.items() if v > 0)),
            tuple(sorted(labels.items())),
        )

    @property
    def empty(self) -> bool:
        return not self.resources and not self.labels

    def describe(self) -> str:
        """``"gpus=1,gpu_type=H100"``: what people see in reasons and listings."""
        return ",".join(
            [f"{k}={_amount(v)}" for k, v in self.resources] + [f"{k}={v}" for k, v in self.labels]
        )

    def __str__(self) -> str:
        return self.describe() or "nothing"


NOTHING = Need()


def _amount(value: float) -> str:
    return f"{value:g}"


def _label_ok(have: str | None, want: str) -> bool:
    return have == want or (have is not None and "|" in want and have in want.split("|"))


def _labels_match(offer: Offer, need: Need) -> bool:
    labels = offer.labels
    return all(_label_ok(labels.get(key), value) for key, value in need.labels)


def fits_now(offer: Offer, need: Need) -> bool:
    """The worker is taking work and its free capacities and labels cover ``need``."""
    if need is NOTHING or need.empty:
        return not offer.draining
    if offer.draining or not _labels_match(offer, need):
        return False
    capacities, used = offer.capacities, offer.used
    return all(
        capacities.get(key, 0.0) - used.get(key, 0.0) + _EPSILON >= amount
        for key, amount in need.resources
    )


def could_fit(offer: Offer, need: Need) -> bool:
    """The worker could ever take ``need`` (its offered capacities and labels cover it)."""
    if not _labels_match(offer, need):
        return False
    capacities = offer.capacities
    return all(capacities.get(key, 0.0) + _EPSILON >= amount for key, amount in need.resources)


def hold(offer: Offer, need: Need) -> None:
    """The worker's free capacities shrink by ``need`` (its work starts holding it)."""
    used = offer.used
    for key, amount in need.resources:
        used[key] = used.get(key, 0.0) + amount


def release(offer: Offer, need: Need) -> None:
    """Give back what ``hold`` took (the work ended or left the worker)."""
    used = offer.used
    for key, amount in need.resources:
        left = used.get(key, 0.0) - amount
        if left > _EPSILON:
            used[key] = left
        else:
            used.pop(key, None)


def free(offer: Offer) -> dict[str, float]:
    """The worker's capacities not held by its work now."""
    return {k: max(0.0, v - offer.used.get(k, 0.0)) for k, v in offer.capacities.items()}


def unplaceable_reason(need: Need, offers: Iterable[Offer]) -> str:
    """Why no live worker could ever take ``need`` (``""`` when one could).

    Names the first thing missing, e.g. ``"no worker offers gpus=1"``, ``"no worker offers
    gpus=4 (the most is 2)"``, ``"no worker has label zone=us-east1"``. Work that asks for
    nothing always has an answer of ``""`` (the no-worker warning covers an empty cluster).
    """
    if need.empty:
        return ""
    live = [o for o in offers if not o.draining]
    if any(could_fit(o, need) for o in live):
        return ""
    for key, value in need.labels:
        if not any(_label_ok(o.labels.get(key), value) for o in live):
            return f"no worker has label {key}={value}"
    labelled = [o for o in live if _labels_match(o, need)]
    for key, amount in need.resources:
        most = max((o.capacities.get(key, 0.0) for o in labelled), default=0.0)
        if most + _EPSILON < amount:
            if most <= 0:
                return f"no worker offers {key}={_amount(amount)}" + _where(need)
            return f"no worker offers {key}={_amount(amount)} (the most is {_amount(most)})" + (
                _where(need)
            )
    return f"no single worker offers {need.describe()}"


class Reasons:
    """`unplaceable_reason` over one set of workers, memoised by need: listing many waiting
    tasks costs O(distinct needs x workers), not O(tasks x workers)."""

    def __init__(self, offers: Iterable[Offer]) -> None:
        self._offers = list(offers)
        self._memo: dict[Need, str] = {}

    def of(self, need: Need) -> str:
        if need.empty:
            return ""
        reason = self._memo.get(need)
        if reason is None:
            reason = self._memo[need] = unplaceable_reason(need, self._offers)
        return reason


def _where(need: Need) -> str:
    if not need.labels:
        return ""
    return " with " + ",".join(f"{k}={v}" for k, v in need.labels)
