"""Actors on the fray controller: placement, calls, failures, restarts, kill, curl.

The API contract shared with the other backends is in test_job_contract.py. Tests share one
cluster of two workers (`two_workers`, checked idle before each test) unless they break a worker
(`own_two_workers`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import httpx
import pytest
from fray_fixtures import children_of, list_workers, pid_alive, wait_for

from fray.client import actor_calls
from fray.client.context import FrayContext
from fray.client.kicker import kicker
from fray.errors import ActorDiedError, SerializationError
from fray.local_cluster import LocalFrayCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONTROLLER = "/fray.v1.FrayController/"


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def where(self) -> tuple[str, int]:
        return os.environ.get("FRAY_WORKER_ID", ""), os.getpid()

    def slow(self, marker: str, seconds: float) -> str:
        Path(marker).write_text("started")
        time.sleep(seconds)
        return "finished"

    def exit(self) -> None:
        os._exit(7)


def kill_worker(cluster: LocalFrayCluster, worker_id: str) -> None:
    """SIGKILL the worker process registered as `worker_id` (and its children)."""
    for process in cluster.workers:
        if worker_id in " ".join(process.args):  # type: ignore[arg-type]
            children = children_of(process.pid)
            process.send_signal(signal.SIGKILL)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(10)
            return
    raise AssertionError(f"no process for {worker_id}")


@contextlib.contextmanager
def start_two_workers() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=0, heartbeat_timeout=1.5) as cluster:
        for worker_id in ("wa", "wb"):
            cluster.add_worker("--worker-id", worker_id, "--concurrency", "1")
        cluster.wait_for_workers(2)
        yield cluster


@pytest.fixture(scope="module")
def shared_two_workers() -> Iterator[LocalFrayCluster]:
    with start_two_workers() as cluster:
        yield cluster


@pytest.fixture
def two_workers(shared_two_workers: LocalFrayCluster) -> LocalFrayCluster:
    """The module's cluster, as a fresh one would be: both workers up, no live actor (so that
    placement starts even), no task running."""
    cluster = shared_two_workers

    def idle() -> bool:
        workers = list_workers(cluster.address)
        live = [a for a in list_actors(cluster.address) if a["state"] not in _ENDED]
        busy = any(w.task_ids or w.direct_running for w in workers.values())
        return sorted(workers) == ["wa", "wb"] and not live and not busy

    wait_for(idle, 30, "the shared cluster to be idle")
    return cluster


@pytest.fixture
def own_two_workers() -> Iterator[LocalFrayCluster]:
    """A cluster of its own, for a test that kills or stops a worker."""
    with start_two_workers() as cluster:
        yield cluster


_ENDED = ("ACTOR_STATE_DEAD", "ACTOR_STATE_FAILED")


def list_actors(address: str) -> list[dict[str, object]]:
    response = httpx.post(f"{address}{CONTROLLER}ListActors", json={}, timeout=20)
    assert response.status_code == 200
    return list(response.json().get("actors", []))


def test_actors_spread_over_workers_and_show_in_curl(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        actors = [ctx.create_actor(Counter, i, name=f"c{i}") for i in range(4)]
        places = ctx.get([a.where.remote() for a in actors])
        assert sorted(w for w, _ in places) == ["wa", "wa", "wb", "wb"]
        assert len({pid for _, pid in places}) == 4  # a process each
        ids = {a.actor_id for a in actors}
        listed = {a["name"]: a for a in list_actors(two_workers.address) if a["actorId"] in ids}
        assert set(listed) == {"c0", "c1", "c2", "c3"}
        assert {a["state"] for a in listed.values()} == {"ACTOR_STATE_READY"}
        assert listed["c0"]["className"] == "Counter"
        one = httpx.get(
            f"{two_workers.address}{CONTROLLER}GetActor",
            params={"encoding": "json", "message": '{"name": "c1"}'},
            timeout=20,
        ).json()["actor"]
        assert one["actorId"] == actors[1].actor_id
        assert one["workerId"] in ("wa", "wb")
    # Closing the context killed its (non-detached) actors.
    ours = [a for a in list_actors(two_workers.address) if a["actorId"] in ids]
    states = {a["name"]: a["state"] for a in ours}
    assert set(states) == {"c0", "c1", "c2", "c3"}
    assert set(states.values()) == {"ACTOR_STATE_DEAD"}


def test_a_killed_actor_fails_its_calls_and_frees_its_name(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter, name="k")
        _, pid = ctx.get(actor.where.remote())
        ctx.kill_actor(actor)
        with pytest.raises(ActorDiedError, match="killed"):
            ctx.get(actor.add.remote(1), timeout=30)
        wait_for(lambda: not pid_alive(pid), 10, "the actor process to exit")
        again = ctx.create_actor(Counter, 5, name="k")  # the name is free again
        assert ctx.get(again.add.remote(1), timeout=30) == 6


def test_sigkilled_host_gives_actor_died_then_a_restart_elsewhere(
    own_two_workers: LocalFrayCluster, tmp_path: Path
) -> None:
    two_workers = own_two_workers
    with FrayContext(two_workers.address) as ctx:
        # Placement alternates between the two workers: `keeper` and `mortal` share one.
        keeper = ctx.create_actor(Counter, 100, max_restarts=1)
        other = ctx.create_actor(Counter)
        mortal = ctx.create_actor(Counter)
        host, _ = ctx.get(keeper.where.remote())
        assert ctx.get(mortal.where.remote())[0] == host != ctx.get(other.where.remote())[0]
        assert ctx.get(keeper.add.remote(1)) == 101
        marker = tmp_path / "started"
        in_flight = keeper.slow.remote(str(marker), 30)
        wait_for(marker.exists, 20, "the call to start")
        kill_worker(two_workers, host)
        with pytest.raises(ActorDiedError, match="may or may not have run"):
            in_flight.result(timeout=30)
        # Re-created on the other worker, with fresh state; the one without restarts is dead.
        assert ctx.get(keeper.add.remote(1), timeout=60) == 101
        assert ctx.get(keeper.where.remote())[0] != host
        with pytest.raises(ActorDiedError):  # its handle learns of the death on this call
            ctx.get(mortal.add.remote(1), timeout=60)
        with pytest.raises(ActorDiedError, match="is dead"):
            ctx.get(mortal.add.remote(1), timeout=60)
        assert ctx.get(other.add.remote(1)) == 1


def test_an_actor_process_that_dies_fails_the_call_and_restarts(
    two_workers: LocalFrayCluster,
) -> None:
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter, 1, max_restarts=1)
        _, pid = ctx.get(actor.where.remote())
        with pytest.raises(ActorDiedError, match="may or may not have run"):
            ctx.get(actor.exit.remote(), timeout=30)
        assert ctx.get(actor.add.remote(1), timeout=60) == 2  # fresh state
        assert ctx.get(actor.where.remote())[1] != pid
        with pytest.raises(ActorDiedError):
            ctx.get(actor.exit.remote(), timeout=30)
        with pytest.raises(ActorDiedError, match="dead"):  # no restarts left
            ctx.get(actor.add.remote(1), timeout=60)


def test_result_timeout_holds_while_the_actor_waits_for_a_new_worker() -> None:
    with (
        LocalFrayCluster(workers=0, heartbeat_timeout=1.5) as cluster,
        FrayContext(cluster.address) as ctx,
    ):
        cluster.add_worker("--worker-id", "first")
        cluster.wait_for_workers(1)
        actor = ctx.create_actor(Counter, 10, max_restarts=1)
        assert ctx.get(actor.add.remote(1), timeout=30) == 11
        kill_worker(cluster, "first")  # no other worker to restart it on, for now
        started = time.monotonic()
        call = actor.add.remote(1)
        with pytest.raises(TimeoutError):
            call.result(timeout=1.0)  # at once: the caller itself sends it
        assert time.monotonic() - started < 5  # not the 60 s wait for a new placement
        cluster.add_worker()
        assert call.result(timeout=60) == 11  # kept, and run by the restarted actor
        assert ctx.get(actor.add.remote(1), timeout=30) == 12


def test_detached_actors_outlive_their_creator(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        ctx.create_actor(Counter, 7, name="keeper", lifetime="detached")
    with FrayContext(two_workers.address) as other:
        found = other.create_actor(Counter, name="keeper", get_if_exists=True)
        assert other.get(found.add.remote(0), timeout=30) == 7
        other.kill_actor(found)


_FORGOTTEN_CONTEXT = """
import gc, sys
from fray.client.context import FrayContext

class Counter:
    def __init__(self, start):
        self.total = start

    def add(self, n):
        self.total += n
        return self.total

def make():  # the context is dropped: only the handle is kept
    return FrayContext(sys.argv[1]).create_actor(Counter, 5, name="forgotten")

handle = make()
gc.collect()
print(handle.add.remote(1).result(timeout=30), flush=True)
"""


def test_a_forgotten_context_still_kills_its_actors_at_exit(two_workers: LocalFrayCluster) -> None:
    """Only an actor handle refers to the context: the context stays open until exit anyway,
    and exiting kills its non-detached actor."""
    done = subprocess.run(
        [sys.executable, "-c", _FORGOTTEN_CONTEXT, two_workers.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
    states = {a["name"]: a["state"] for a in list_actors(two_workers.address)}
    assert states["forgotten"] == "ACTOR_STATE_DEAD"


def test_handles_travel_into_tasks(two_workers: LocalFrayCluster) -> None:
    def bump(handle: object) -> int:
        from fray.job import get_default_job_ctx

        ctx = get_default_job_ctx()
        return int(ctx.get(handle.add.remote(10)))  # type: ignore[attr-defined]

    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter, 1)
        assert ctx.get(ctx.run(bump, actor), timeout=60) == 11
        assert ctx.get(actor.add.remote(0)) == 11


def test_an_unpicklable_constructor_argument_fails_at_create(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        with pytest.raises(SerializationError):
            ctx.create_actor(Counter, threading.Lock())
        with pytest.raises(ValueError, match="lifetime"):
            ctx.create_actor(Counter, lifetime="forever")


def test_a_call_to_a_stuck_host_ends_in_bounded_time(
    own_two_workers: LocalFrayCluster, tmp_path: Path
) -> None:
    two_workers = own_two_workers
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter)
        host, _ = ctx.get(actor.where.remote())
        (process,) = [p for p in two_workers.workers if host in " ".join(p.args)]  # type: ignore[arg-type]
        marker = tmp_path / "started"
        in_flight = actor.slow.remote(str(marker), 60)
        wait_for(marker.exists, 20, "the call to start")
        process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ActorDiedError, match="may or may not have run"):
                in_flight.result(timeout=30)
            # A hang check: normally ~7 s (a CallActor wait of 5 s plus its 2 s margin).
            assert time.monotonic() - started < 25
        finally:
            process.send_signal(signal.SIGCONT)


def test_call_actor_answers_curl(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter, 41)
        ctx.get(actor.add.remote(0))
        record = httpx.post(
            f"{two_workers.address}{CONTROLLER}GetActor",
            json={"actorId": actor.actor_id},
            timeout=20,
        ).json()["actor"]
        args = base64.b64encode(cloudpickle.dumps(((1,), {}))).decode()
        response = httpx.post(
            f"{record['address']}/fray.v1.FrayWorker/CallActor",
            json={"actorId": actor.actor_id, "calls": [{"method": "add", "args": args}]},
            timeout=20,
        )
        assert response.status_code == 200
        (result,) = response.json()["results"]
        assert cloudpickle.loads(base64.b64decode(result["value"])) == 42
        missing = httpx.post(
            f"{record['address']}/fray.v1.FrayWorker/CallActor",
            json={"actorId": "nope", "calls": []},
            timeout=20,
        )
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


class SlowToBuild:
    def __init__(self, marker: str) -> None:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)

    def ping(self) -> str:
        return "pong"


def test_a_call_may_take_an_earlier_calls_future(two_workers: LocalFrayCluster) -> None:
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter)
        first = actor.add.remote(1)
        second = actor.add.remote(first)  # queued right behind the call it waits for
        assert ctx.get(second, timeout=30) == 2


def test_killing_an_actor_while_it_is_built_stops_its_process(
    two_workers: LocalFrayCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(SlowToBuild, str(marker))
        wait_for(marker.exists, 30, "the constructor to start")
        ctx.kill_actor(actor)
        wait_for(lambda: not pid_alive(int(marker.read_text())), 15, "the actor process to stop")


def test_idle_senders_end_and_the_kicker_sleeps(
    two_workers: LocalFrayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actor_calls, "IDLE_SECONDS", 0.2)
    with FrayContext(two_workers.address) as ctx:
        actor = ctx.create_actor(Counter)
        sender = f"fray-actor-{actor.actor_id}"
        calls = [actor.add.remote(1) for _ in range(100)]  # pile up: a sender thread sends them
        assert ctx.get(calls, timeout=30)[-1] == 100
        lone = actor.add.remote(1)  # nobody waits for it: the kicker has it sent
        concurrent.futures.wait([lone], timeout=30)
        assert lone.result(timeout=0) == 101

        def senderpid_alive() -> bool:
            return any(t.name == sender for t in threading.enumerate())

        wait_for(lambda: not senderpid_alive(), 10, "the idle sender thread to end")
        wait_for(lambda: kicker.idle, 10, "the kicker to sleep")
        passes = kicker.passes
        time.sleep(0.3)
        assert kicker.passes == passes  # no wake-ups while nothing is pending
        # Senders come back when needed; calls keep their order.
        assert ctx.get([actor.add.remote(1) for _ in range(10)], timeout=30)[-1] == 111
