"""``iris.actor.resolver``: resolved endpoints, the Resolver protocol, FixedResolver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class ResolvedEndpoint:
    url: str
    actor_id: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ResolveResult:
    name: str
    endpoints: list[ResolvedEndpoint] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.endpoints

    def first(self) -> ResolvedEndpoint:
        if not self.endpoints:
            raise ValueError(f"No endpoints for '{self.name}'")
        return self.endpoints[0]


class Resolver(Protocol):
    def resolve(self, name: str) -> ResolveResult: ...


class FixedResolver:
    """Names mapped to fixed URLs."""

    def __init__(self, endpoints: dict[str, str | list[str]]) -> None:
        self._endpoints = {
            name: [urls] if isinstance(urls, str) else list(urls)
            for name, urls in endpoints.items()
        }

    def resolve(self, name: str) -> ResolveResult:
        urls = self._endpoints.get(name, [])
        return ResolveResult(
            name=name,
            endpoints=[
                ResolvedEndpoint(url=url, actor_id=f"fixed-{name}-{i}")
                for i, url in enumerate(urls)
            ],
        )
