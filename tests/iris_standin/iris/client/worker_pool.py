"""``iris.client.worker_pool``: WorkerPool and WorkerPoolConfig.

As in Iris: one job of ``num_workers`` tasks, each serving a task-executor actor registered as
``_workerpool_POOL:worker-I`` in the job's namespace; one dispatch thread per worker finds its
endpoint and feeds it queued calls. ``submit`` returns a ``WorkerFuture``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import cloudpickle

from iris.actor.client import ActorClient
from iris.actor.resolver import Resolver
from iris.actor.server import ActorServer
from iris.client.client import IrisClient, Job, iris_ctx
from iris.cluster.client import get_job_info
from iris.cluster.types import Entrypoint, EnvironmentSpec, ResourceSpec


class TaskExecutorActor:
    def execute(self, fn: bytes, args: bytes, kwargs: bytes) -> Any:
        return cloudpickle.loads(fn)(*cloudpickle.loads(args), **cloudpickle.loads(kwargs))


def worker_job_entrypoint(pool_id: str) -> None:
    ctx = iris_ctx()
    info = get_job_info()
    if info is None or ctx.registry is None:
        raise RuntimeError("must run inside an Iris job")
    name = f"_workerpool_{pool_id}:worker-{info.task_index}"
    server = ActorServer(host="0.0.0.0", port=ctx.get_port("actor"))
    server.register(name, TaskExecutorActor())
    port = server.serve_background()
    ctx.registry.register(name, f"{info.advertise_host}:{port}", {"job_id": ctx.job_id})
    server.wait()


@dataclass
class WorkerPoolConfig:
    num_workers: int
    resources: ResourceSpec
    environment: EnvironmentSpec | None = None
    name_prefix: str = "worker"
    max_retries: int = 0


@dataclass
class WorkerFuture:
    _future: Future[Any]
    _fn_name: str

    def result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def done(self) -> bool:
        return self._future.done()

    def exception(self) -> BaseException | None:
        return self._future.exception() if self._future.done() else None


@dataclass
class _Pending:
    fn: bytes
    args: bytes
    kwargs: bytes
    future: Future[Any]


class WorkerPool:
    def __init__(
        self,
        client: IrisClient,
        config: WorkerPoolConfig,
        timeout: float = 30.0,
        resolver: Resolver | None = None,
        threads: Any = None,
    ) -> None:
        self._client = client
        self._config = config
        self._timeout = timeout
        self._pool_id = uuid.uuid4().hex[:8]
        self._resolver = resolver
        self._job: Job | None = None
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._ready: set[int] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def __enter__(self) -> WorkerPool:
        self._launch_workers()
        self.wait_for_workers()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown(wait=False)

    @property
    def pool_id(self) -> str:
        return self._pool_id

    @property
    def size(self) -> int:
        return len(self._ready)

    @property
    def job_id(self) -> Any:
        return self._job.job_id if self._job else None

    def _launch_workers(self) -> None:
        self._job = self._client.submit(
            entrypoint=Entrypoint.from_callable(worker_job_entrypoint, self._pool_id),
            name=f"{self._config.name_prefix}-{self._pool_id}",
            resources=self._config.resources,
            environment=self._config.environment,
            ports=["actor"],
            replicas=self._config.num_workers,
        )
        if self._resolver is None:
            self._resolver = self._client.resolver_for_job(self._job.job_id)
        for index in range(self._config.num_workers):
            thread = threading.Thread(target=self._dispatch, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_for_workers(self, min_workers: int | None = None, timeout: float = 600.0) -> None:
        wanted = self._config.num_workers if min_workers is None else min_workers
        deadline = time.monotonic() + timeout
        while self.size < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Only {self.size} of {wanted} workers registered")
            time.sleep(0.05)

    def _dispatch(self, index: int) -> None:
        assert self._resolver is not None
        name = f"_workerpool_{self._pool_id}:worker-{index}"
        while not self._stop.is_set() and self._resolver.resolve(name).is_empty:
            self._stop.wait(0.05)
        self._ready.add(index)
        client = ActorClient(self._resolver, name, call_timeout=self._timeout)
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                self._queue.task_done()
                return
            try:
                item.future.set_result(client.execute(item.fn, item.args, item.kwargs))
            except Exception as exc:
                item.future.set_exception(exc)
            finally:
                self._queue.task_done()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> WorkerFuture:
        if self._shutdown:
            raise RuntimeError("WorkerPool has been shutdown")
        if self._job is None:
            raise RuntimeError("No workers available")
        future: Future[Any] = Future()
        self._queue.put(
            _Pending(
                cloudpickle.dumps(fn), cloudpickle.dumps(args), cloudpickle.dumps(kwargs), future
            )
        )
        return WorkerFuture(_future=future, _fn_name=getattr(fn, "__name__", "lambda"))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[WorkerFuture]:
        return [self.submit(fn, item) for item in items]

    def shutdown(self, wait: bool = True) -> None:
        self._shutdown = True
        if wait:
            self._queue.join()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._job is not None:
            with contextlib.suppress(Exception):  # already gone
                self._job.terminate()
