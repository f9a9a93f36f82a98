"""The actors a worker hosts: one process each (`executor.actor_main`), called over a pipe.

The controller places an actor on a worker through the worker's lease answer; the worker builds
it in a new process (in a thread: constructors may be slow) and reports READY or FAILED. Calls
come straight from clients (`FrayWorker.CallActor`, in batches): the worker's event loop writes
a batch to the actor's pipe and waits for the pipe to become readable, so a call costs no thread
hand-off. Batches for one actor run one at a time, in the order they arrived. An actor process
that dies is reported DEAD (the controller restarts it elsewhere if it may). Large objects reach
an actor as files, and large method results come back as files (`fray.worker.objects`), as
for tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.worker import capture, executor
from fray.worker.executor import ObjectData

logger = logging.getLogger(__name__)

# Bigger batches are written from a thread: a pipe holds 64 KiB, and the event loop must not
# block on an actor that is slow to read.
_LARGE_MESSAGE = 1 << 16
BATCH_KEEP_SECONDS = 30.0  # a finished batch's results wait this long for a client to ask


class UnknownActor(Exception):
    """No such actor (or incarnation) on this worker (Connect `not_found`)."""


class ActorAborted(Exception):
    """The actor's process died during the calls (Connect `aborted`)."""


class _NotBuilt(Exception):
    """The actor could not be built: report `state` (FAILED or DEAD) with `error`."""

    def __init__(self, state: pb.ActorState, error: pb.TaskError) -> None:
        super().__init__(error.message)
        self.state = state
        self.error = error


@dataclass
class _Hosted:
    spec: pb.ActorSpec
    process: Any
    requests: Any  # one-way pipes: the event loop watches `results` (which makes it
    results: Any  # non-blocking); writes to `requests` stay blocking
    stopped: bool = False  # stopped on purpose: its exit is no news
    exited: bool = False  # its process ended (it stays listed until its end is reported)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _update(spec: pb.ActorSpec, state: pb.ActorState) -> pb.ActorUpdate:
    return pb.ActorUpdate(actor_id=spec.actor_id, incarnation=spec.incarnation, state=state)


@dataclass
class _Batch:
    task: asyncio.Task[list[pb.TaskResult]]


class ActorHost:
    """The actors this worker hosts, and the batches of calls running on them.

    `client` carries the reports to the controller (READY, FAILED, DEAD); `fetch_object` gives
    the objects a constructor or a call names; `result_dir` is where actor processes write
    large results, which `store_result` (by id) turns into result bytes.
    """

    def __init__(
        self,
        worker_id: str,
        client: ControllerClient,
        fetch_object: Callable[[str], ObjectData],
        *,
        result_dir: Callable[[], str | None] = lambda: None,
        store_result: Callable[[str], bytes] | None = None,
    ) -> None:
        self._worker_id = worker_id
        self._client = client
        self._fetch_object = fetch_object
        self._result_dir = result_dir
        self._store_result = store_result
        self._actors: dict[str, _Hosted] = {}
        self._starting: dict[str, _Hosted] = {}  # being built
        self._lock = threading.Lock()
        # Event loop only: batches by id, and the finished ones oldest first (for forgetting).
        self._batches: dict[str, _Batch] = {}
        self._ended: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._actors)

    # ------------------------------------------------------------------ life cycle

    def start(self, spec: pb.ActorSpec) -> None:
        """Build the actor in the background, then report READY or FAILED. It is listed as
        being built from now on (the next lease reports it); an order for an incarnation it
        already has or builds (sent again by the controller) is ignored."""
        with self._lock:
            known = (self._starting.get(spec.actor_id), self._actors.get(spec.actor_id))
            if any(h is not None and h.spec.incarnation >= spec.incarnation for h in known):
                return  # sent again: it is here already
        hosted: _Hosted | None = None
        try:
            context = executor.context()
            requests_in, requests = context.Pipe(duplex=False)
            results, results_out = context.Pipe(duplex=False)
            process = context.Process(
                target=executor.actor_main,
                args=(requests_in, results_out, os.getpid(), self._result_dir()),
                daemon=True,
                name="fray-actor",
            )
            hosted = _Hosted(spec, process, requests, results)
            with self._lock:
                self._starting[spec.actor_id] = hosted  # stop() finds it here while it is built
            threading.Thread(
                target=self._start,
                args=(hosted, requests_in, results_out),
                name=f"fray-actor-{spec.actor_id}",
                daemon=True,
            ).start()
        except Exception as exc:  # e.g. out of file descriptors: this actor fails, not the worker
            logger.exception("could not start building actor %s", spec.actor_id)
            if hosted is not None:
                self._forget(hosted)
            error = self._error(spec, pb.ERROR_KIND_WORKER_LOST, "started", exc)
            self._report(spec, pb.ACTOR_STATE_FAILED, error)

    def hosted(self) -> list[pb.ActorUpdate]:
        """The actors here, for the controller: READY, or CREATING while being built (the
        newest incarnation of each; stopped ones are not listed)."""
        newest: dict[str, pb.ActorUpdate] = {}
        with self._lock:
            listed = [(h, pb.ACTOR_STATE_CREATING) for h in self._starting.values()]
            listed += [(h, pb.ACTOR_STATE_READY) for h in self._actors.values()]
        for hosted, state in listed:
            spec = hosted.spec
            seen = newest.get(spec.actor_id)
            if not hosted.stopped and (seen is None or spec.incarnation > seen.incarnation):
                newest[spec.actor_id] = _update(spec, state)
        return list(newest.values())

    def _forget(self, hosted: _Hosted) -> None:
        actor_id = hosted.spec.actor_id
        with self._lock:
            for table in (self._starting, self._actors):
                if table.get(actor_id) is hosted:
                    del table[actor_id]

    def _start(self, hosted: _Hosted, requests_in: Any, results_out: Any) -> None:
        """Build, report, and watch the actor's process. It stays listed (CREATING, then READY)
        until its end is reported, so the controller never sends its start order again."""
        spec = hosted.spec
        try:
            built = self._build(hosted, requests_in, results_out)
        except _NotBuilt as failure:
            self._report(spec, failure.state, failure.error)
            self._forget(hosted)
            return
        except BaseException:
            self._forget(hosted)
            raise
        if built is None:  # stopped while it was being built
            self._forget(hosted)
            return
        logger.info("actor %s (%s) ready", spec.actor_id, spec.class_name)
        self._report(spec, pb.ACTOR_STATE_READY)
        hosted.process.join()  # until it exits
        hosted.exited = True  # calls from now on are for an actor that is not here
        if not hosted.stopped:
            exit_code = hosted.process.exitcode
            self._report(spec, pb.ACTOR_STATE_DEAD, self._died(spec, exit_code))
        self._forget(hosted)

    def _build(self, hosted: _Hosted, requests_in: Any, results_out: Any) -> _Hosted | None:
        spec, process = hosted.spec, hosted.process
        try:
            process.start()
            requests_in.close()
            results_out.close()
            if hosted.stopped:  # stopped before its process existed
                self._kill(hosted)
                return None
            objects = {oid: self._fetch_object(oid) for oid in spec.object_ids}
            hosted.requests.send_bytes(pickle.dumps((spec.cls, spec.args, objects)))
            status, data = pickle.loads(hosted.results.recv_bytes())
        except (EOFError, OSError):
            if hosted.stopped:
                return None
            process.join(5)  # its process died while building it (os._exit, a crash)
            raise _NotBuilt(pb.ACTOR_STATE_DEAD, self._died(spec, process.exitcode)) from None
        except Exception as exc:
            self._kill(hosted)
            error = self._error(spec, pb.ERROR_KIND_DESERIALIZATION, "built", exc)
            raise _NotBuilt(pb.ACTOR_STATE_FAILED, error) from None
        if status != "ok":
            process.join(5)
            error = pb.TaskError.FromString(data)
            error.worker_id = self._worker_id
            raise _NotBuilt(pb.ACTOR_STATE_FAILED, error)
        with self._lock:
            if self._starting.get(spec.actor_id) is hosted:
                del self._starting[spec.actor_id]
            old = self._actors.get(spec.actor_id)
            newer = old is not None and old.spec.incarnation > spec.incarnation
            if not (hosted.stopped or newer):
                self._actors[spec.actor_id] = hosted
        if hosted.stopped or newer:  # stopped meanwhile, or a later incarnation is here
            self._kill(hosted)
            return None
        if old is not None:
            self._kill(old)
        return hosted

    def _error(
        self, spec: pb.ActorSpec, kind: pb.ErrorKind, what: str, exc: Exception
    ) -> pb.TaskError:
        return pb.TaskError(
            kind=kind,
            type=type(exc).__qualname__,
            message=f"actor {spec.actor_id} could not be {what}: {exc}",
            worker_id=self._worker_id,
        )

    def _died(self, spec: pb.ActorSpec, exit_code: int | None) -> pb.TaskError:
        message = f"actor {spec.actor_id} process exited (exit code {exit_code})"
        logger.warning("%s", message)
        return pb.TaskError(
            kind=pb.ERROR_KIND_WORKER_LOST,
            type="ActorDiedError",
            message=message,
            worker_id=self._worker_id,
        )

    def _report(
        self, spec: pb.ActorSpec, state: pb.ActorState, error: pb.TaskError | None = None
    ) -> None:
        update = pb.ActorUpdate(
            actor_id=spec.actor_id, incarnation=spec.incarnation, state=state, error=error
        )
        request = pb.ReportActorsRequest(worker_id=self._worker_id, updates=[update])
        client = self._client
        try:
            client.call(client.rpc.report_actors, request)
        except Exception as exc:  # the controller will learn when it drops this worker
            logger.warning("could not report actor %s: %s", spec.actor_id, exc)

    def stop(self, actor_id: str) -> None:
        with self._lock:
            hosted = self._actors.pop(actor_id, None) or self._starting.get(actor_id)
        if hosted is not None:
            logger.info("stopping actor %s", actor_id)
            self._kill(hosted)

    def stop_all(self) -> None:
        with self._lock:
            hosted = [*self._actors.values(), *self._starting.values()]
            self._actors = {}
        for actor in hosted:
            self._kill(actor)

    @staticmethod
    def _kill(hosted: _Hosted) -> None:
        hosted.stopped = True
        if hosted.process.pid is not None:
            hosted.process.kill()  # a call in flight sees the pipe close (ActorAborted)

    # ------------------------------------------------------------------ calls

    def start_batch(self, request: wpb.CallActorRequest) -> asyncio.Task[list[pb.TaskResult]]:
        """Start running a batch of calls (or find the one already running under its id)."""
        self._forget_old_batches()
        known = self._batches.get(request.batch_id) if request.batch_id else None
        if known is not None:  # a client's retry
            return known.task
        hosted = self._actors.get(request.actor_id)
        if (
            hosted is None
            or hosted.exited
            or (request.incarnation and hosted.spec.incarnation != request.incarnation)
        ):
            raise UnknownActor(
                f"actor {request.actor_id} (incarnation {request.incarnation}) "
                "is not on this worker"
            )
        task = asyncio.get_running_loop().create_task(self._run_batch(hosted, list(request.calls)))
        batch_id = request.batch_id or uuid.uuid4().hex
        self._batches[batch_id] = _Batch(task)
        task.add_done_callback(lambda _: self._ended.append((time.monotonic(), batch_id)))
        return task

    def find_batch(self, batch_id: str) -> asyncio.Task[list[pb.TaskResult]]:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise UnknownActor(f"no batch {batch_id} on this worker (unknown or forgotten)")
        return batch.task

    def _forget_old_batches(self) -> None:
        cutoff = time.monotonic() - BATCH_KEEP_SECONDS
        while self._ended and self._ended[0][0] < cutoff:
            self._batches.pop(self._ended.popleft()[1], None)

    async def _run_batch(self, hosted: _Hosted, calls: list[wpb.ActorCall]) -> list[pb.TaskResult]:
        """Run `calls` on the actor, in order; one batch at a time per actor."""
        actor_id = hosted.spec.actor_id
        # Under the actor's lock from the start: batches run in the order they arrived, even
        # when one has objects to fetch first.
        async with hosted.lock:
            objects = {}
            for object_id in {oid for call in calls for oid in call.object_ids}:
                objects[object_id] = await asyncio.to_thread(self._fetch_object, object_id)
            batch = pickle.dumps(
                [(c.method, c.args, {o: objects[o] for o in c.object_ids}) for c in calls],
                protocol=5,
            )
            try:
                if len(batch) > _LARGE_MESSAGE:
                    await asyncio.to_thread(hosted.requests.send_bytes, batch)
                else:
                    hosted.requests.send_bytes(batch)
            except OSError as exc:  # its process had ended: the calls never reached it
                raise UnknownActor(f"actor {actor_id} has exited ({exc})") from None
            try:
                await _readable(hosted.results)
                outcomes = pickle.loads(hosted.results.recv_bytes())
            except (EOFError, OSError) as exc:
                raise ActorAborted(f"actor {actor_id} died during the call ({exc})") from None
        results = []
        pid = hosted.process.pid
        for status, data, output in outcomes:
            printed = capture.to_pb(output, pid, self._worker_id)
            if status == "stored":
                results.append(await self._stored(data.decode(), printed))
            elif status == "ok":
                results.append(pb.TaskResult(value=data, output=printed))
            else:
                error = pb.TaskError.FromString(data)
                error.worker_id = self._worker_id
                results.append(pb.TaskResult(error=error, output=printed))
        return results

    async def _stored(self, object_id: str, printed: pb.TaskOutput | None) -> pb.TaskResult:
        """The result of a call whose value the actor stored as a file (`object_id`)."""
        try:
            if self._store_result is None:
                raise RuntimeError("this worker cannot store large results")
            value = await asyncio.to_thread(self._store_result, object_id)
            return pb.TaskResult(value=value, output=printed)
        except Exception as exc:
            logger.warning("could not store an actor call's result: %s", exc)
            error = pb.TaskError(
                kind=pb.ERROR_KIND_WORKER_LOST,
                type=type(exc).__qualname__,
                message=f"could not store the call's large result: {exc}",
                worker_id=self._worker_id,
            )
            return pb.TaskResult(error=error, output=printed)


async def _readable(conn: Any) -> None:
    """Wait (on the event loop) until the pipe has data or is closed."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, True)  # the rest of a large message is read in one go
