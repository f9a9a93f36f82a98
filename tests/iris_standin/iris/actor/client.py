"""``iris.actor.client.ActorClient``: ``client.method(*args)`` calls the named actor."""

from __future__ import annotations

import time
from multiprocessing.connection import Client
from typing import Any
from urllib.parse import urlsplit

import cloudpickle

from iris.actor.resolver import Resolver


class ActorClient:
    """Resolves ``name`` (retrying while it has no endpoint) and calls its first endpoint."""

    def __init__(
        self,
        resolver: Resolver,
        name: str,
        call_timeout: float | None = None,
        max_call_attempts: int = 10,
        **_ignored: Any,
    ) -> None:
        self._resolver = resolver
        self._name = name
        self._attempts = max_call_attempts

    def _address(self) -> tuple[str, int]:
        delay = 0.05
        for attempt in range(self._attempts):
            result = self._resolver.resolve(self._name)
            if not result.is_empty:
                url = urlsplit(result.first().url)
                return url.hostname or "127.0.0.1", int(url.port or 0)
            if attempt + 1 < self._attempts:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise ConnectionError(f"No endpoints found for actor '{self._name}'")

    def _invoke(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with Client(self._address()) as conn:
            conn.send_bytes(cloudpickle.dumps((self._name, method, args, kwargs)))
            ok, value = cloudpickle.loads(conn.recv_bytes())
        if not ok:
            raise value
        return value

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._invoke(method, args, kwargs)

        return call
