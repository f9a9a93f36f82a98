"""``iris.actor.server.ActorServer``: serves registered instances' public methods.

Iris serves them over Connect (uvicorn); the stand-in over ``multiprocessing.connection``: a
request is ``cloudpickle((actor_name, method, args, kwargs))``, the answer
``cloudpickle((True, value))`` or ``cloudpickle((False, exception))``.
"""

from __future__ import annotations

import threading
import uuid
from multiprocessing.connection import Connection, Listener
from typing import Any, NewType

import cloudpickle

ActorId = NewType("ActorId", str)


class ActorServer:
    def __init__(self, host: str = "0.0.0.0", port: int | None = None, threads: Any = None):
        self._host = host
        self._port = port
        self._actors: dict[str, Any] = {}
        self._listener: Listener | None = None
        self._actual_port: int | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self._host}:{self._actual_port or self._port}"

    def register(self, name: str, actor: Any) -> ActorId:
        if name in self._actors:
            raise ValueError(f"Actor '{name}' is already registered")
        self._actors[name] = actor
        return ActorId(f"{name}-{uuid.uuid4().hex[:8]}")

    def serve_background(self, port: int | None = None) -> int:
        bind = port if port is not None else (self._port or 0)
        self._listener = Listener((self._host, bind))
        self._actual_port = int(self._listener.address[1])
        threading.Thread(target=self._accept, daemon=True).start()
        return self._actual_port

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    request = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                conn.send_bytes(self._call(request))

    def _call(self, request: bytes) -> bytes:
        try:
            actor_name, method, args, kwargs = cloudpickle.loads(request)
            actor = self._actors.get(actor_name) or next(iter(self._actors.values()))
            if method.startswith("_"):
                raise AttributeError(f"'{method}' is not a public method")
            value = getattr(actor, method)(*args, **kwargs)
            return cloudpickle.dumps((True, value))
        except Exception as exc:
            return cloudpickle.dumps((False, exc))

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
