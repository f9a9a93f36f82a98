"""Live task output: what a running task prints reaches the controller in chunks, the submitting
client prints it as it comes (log_to_driver), and `fray logs --follow` shows it while the task
runs; at the task's end only what was not printed yet is printed."""

from __future__ import annotations

import multiprocessing.connection
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from fray_fixtures import list_workers, recorded_task, wait_for

from fray.client.context import FrayContext
from fray.client.output import DriverLog
from fray.controller.server import ControllerServer
from fray.controller.task_logs import OutputStreams, TaskLogs
from fray.errors import ControllerUnavailableError
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayControllerClientSync
from fray.worker import capture, executor, reporter
from fray.worker.slots import Slot, SlotDuties

# Workers cannot import this module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# ---------------------------------------------------------------------- # end to end


def gated(gate: str) -> str:
    """Prints "first", waits (at most a minute) for the test to create `gate`, prints more."""
    print("first", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("second")
    print("third")
    return "done"


def chunk(
    task_id: str, offset: int, text: str, attempt: int = 1, owner: str = "o"
) -> pb.TaskOutputChunk:
    return pb.TaskOutputChunk(
        task_id=task_id, attempt=attempt, offset=offset, text=text, owner=owner, name="f", pid=7
    )


def test_live_output_appends_only_what_is_new_and_restarts_with_an_attempt() -> None:
    logs = TaskLogs()
    logs.streams.watch("o")
    logs.add_chunk(chunk("t", 0, "ab"))
    logs.add_chunk(chunk("t", 0, "abcd"))  # a repeat with more: only "cd" is new
    logs.add_chunk(chunk("t", 2, "cd"))  # a plain repeat: nothing new
    text = logs.text_from("t", 0)
    assert text is not None and (text.text, text.start, text.end) == ("abcd", 0, 4)
    assert not text.finished and logs.get("t") is None  # live output is not final
    chunks, cursor = logs.streams.read("o", 0)
    assert [(c.offset, c.text) for c in chunks] == [(0, "ab"), (2, "cd")] and cursor == 2
    logs.add_chunk(chunk("t", 10, "xy"))  # a gap: bytes 4..10 never came
    text = logs.text_from("t", 4)
    assert text is not None and (text.text, text.start, text.end) == ("xy", 10, 12)
    logs.add_chunk(chunk("t", 0, "new", attempt=2))  # a new attempt starts again at 0
    text = logs.text_from("t", 0)
    assert text is not None and text.text == "new"
    logs.add_chunk(chunk("t", 3, "old", attempt=1))  # the earlier attempt's, late: ignored
    assert logs.text_from("t", 0).text == "new"  # type: ignore[union-attr]
    logs.add("t", pb.TaskOutput(text="new!", pid=7), attempt=2)  # the final one wins
    text = logs.text_from("t", 3)
    assert text is not None and text.finished and (text.text, text.end) == ("!", 4)
    logs.add_chunk(chunk("t", 0, "late", attempt=2))  # after the final: ignored
    assert logs.get("t") == pb.TaskOutput(text="new!", pid=7)
    logs.add_chunk(chunk("direct", 0, "hi", owner="o"))  # a task the controller does not know
    chunks, cursor = logs.streams.read("o", cursor)
    assert [(c.task_id, c.text) for c in chunks] == [("t", "xy"), ("t", "new"), ("direct", "hi")]
    logs.add_chunk(chunk("other", 0, "not watched", owner="nobody"))
    assert logs.streams.end("nobody") == 0  # an owner that does not watch keeps no stream


def test_a_late_watcher_gets_what_its_running_tasks_printed_so_far() -> None:
    logs = TaskLogs()
    logs.add_chunk(chunk("t", 0, "before\n"))  # nobody watches owner o yet
    logs.add_chunk(chunk("u", 0, "other owner\n", owner="p"))
    logs.watch("o")
    chunks, cursor = logs.streams.read("o", 0)
    assert [(c.task_id, c.offset, c.text, c.name) for c in chunks] == [("t", 0, "before\n", "f")]
    logs.watch("o")  # an existing stream: nothing added again
    logs.add_chunk(chunk("t", 7, "after\n"))
    assert [c.text for c in logs.streams.read("o", cursor)[0]] == ["after\n"]


def test_live_output_is_bounded() -> None:
    logs = TaskLogs(max_bytes=1000, task_live_bytes=100)
    logs.add_chunk(chunk("t", 0, "é" + "x" * 150))  # 152 bytes: the last ~100 kept
    text = logs.text_from("t", 0)
    assert text is not None and text.start >= 52 and text.end == 152 and text.text == "x" * 100
    for i in range(30):
        logs.add_chunk(chunk(f"t{i}", 0, "y" * 100))
    assert logs.size <= 1000 and logs.text_from("t0", 0) is None  # the oldest evicted
    assert logs.text_from("t29", 0) is not None

    now = [0.0]
    streams = OutputStreams(max_bytes=50, max_chunks=3, clock=lambda: now[0])
    streams.watch("o")
    for i in range(10):
        streams.append("o", chunk("t", i * 10, "z" * 10))
    chunks, cursor = streams.read("o", 0)  # a cursor older than what is kept: skips ahead
    assert [c.offset for c in chunks] == [70, 80, 90] and cursor == 10
    assert streams.read("o", 99) == ([c for c in chunks], 10)  # not our positions: all kept
    chunks, _ = streams.read("o", 10)
    assert chunks == [] and not streams.has_new("o", 10)
    streams.append("o", chunk("t", 100, "q"))
    assert streams.has_new("o", 10)
    streams.append("o", chunk("t", 101, "z" * 60))  # bigger than the bound: kept alone
    assert [c.offset for c in streams.read("o", 10)[0]] == [101]
    now[0] = 4000.0  # silent for over an hour: forgotten
    streams.watch("p")
    assert streams.end("o") == 0 and len(streams) == 1


def test_driver_log_prints_lines_once() -> None:
    import io

    out = io.StringIO()
    log = DriverLog(out)
    log.chunk(chunk("t", 0, "one\ntw"))  # an unfinished line waits
    log.chunk(chunk("t", 0, "one\ntw"))  # a repeat prints nothing
    log.chunk(chunk("t", 6, "o\nthr"))
    assert out.getvalue() == "(f pid=7 worker= task=t) one\n(f pid=7 worker= task=t) two\n"
    log.task("f", "t", pb.TaskOutput(text="ee\nfour\n", dropped_bytes=8, pid=7))
    assert out.getvalue().splitlines()[2:] == [
        "(f pid=7 worker= task=t) ee",
        "(f pid=7 worker= task=t) four",
    ]
    log.chunk(chunk("t", 8, "ee\nfour\nlate\n"))  # after the end: nothing
    assert len(out.getvalue().splitlines()) == 4
    log.chunk(chunk("u", 0, "all\n"))
    log.task("u", "u", pb.TaskOutput(text="all\n", pid=7))  # printed already: nothing more
    assert out.getvalue().count("all") == 1


@pytest.fixture(scope="module")
def live_cluster() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=1, concurrency=2, heartbeat_timeout=2.0) as c:
        yield c


def wait_until_idle(cluster: LocalFrayCluster) -> None:
    wait_for(
        lambda: all(
            not w.task_ids and w.direct_running == 0 for w in list_workers(cluster.address).values()
        ),
        10,
        "the controller to see the workers idle",
    )


@pytest.mark.parametrize("path", ["direct", "queued"])
def test_the_client_prints_output_while_the_task_runs(
    live_cluster: LocalFrayCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
) -> None:
    gate = tmp_path / "gate"
    wait_until_idle(live_cluster)  # a direct task must find a free slot
    err: list[str] = []

    def printed() -> str:
        err.append(capsys.readouterr().err)
        return "".join(err)

    with FrayContext(live_cluster.address, direct=path == "direct") as ctx:
        future = ctx.run(gated, str(gate))
        wait_for(lambda: f"task={future.task_id}) first" in printed(), 30, "first to be printed")
        assert not future.done()  # printed while it runs
        gate.write_text("open")
        assert future.result(timeout=30) == "done"
    lines = [line.split(") ", 1)[1] for line in printed().splitlines() if future.task_id in line]
    assert lines == ["first", "second", "third"]  # the rest once, nothing twice
    assert recorded_task(live_cluster.address, future.task_id).direct == (path == "direct")


@pytest.mark.parametrize("path", ["direct", "queued"])
def test_get_task_logs_follow_and_the_cli_show_output_while_the_task_runs(
    live_cluster: LocalFrayCluster, tmp_path: Path, path: str
) -> None:
    gate = tmp_path / "gate"
    wait_until_idle(live_cluster)
    client = ControllerClient(live_cluster.address, retry_timeout=10)
    cli = None
    try:
        with FrayContext(live_cluster.address, direct=path == "direct", log_to_driver=False) as ctx:
            future = ctx.run(gated, str(gate))
            answer = pb.GetTaskLogsResponse()

            def follow_has_first() -> bool:
                nonlocal answer
                request = pb.GetTaskLogsRequest(
                    task_id=future.task_id, follow=True, offset=0, wait_ms=1000
                )
                try:
                    answer = client.call(client.rpc.get_task_logs, request)
                except Exception:  # not_found: a direct task the controller has not heard of
                    return False
                return "first" in answer.output.text

            wait_for(follow_has_first, 30, "GetTaskLogs follow to show first")
            assert not answer.finished and answer.next_offset == len("first\n")
            assert not future.done()
            # `fray logs --follow` prints it before the task ends.
            cli = subprocess.Popen(
                [sys.executable, "-m", "fray", "logs", "--controller", live_cluster.address]
                + ["--follow", future.task_id],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert cli.stdout is not None
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(cli.stdout or []), daemon=True)
            reader.start()
            wait_for(lambda: lines[:1] == ["first\n"], 30, "fray logs --follow to print first")
            assert cli.poll() is None and not future.done()
            gate.write_text("open")
            assert future.result(timeout=30) == "done"
            assert cli.wait(timeout=30) == 0, cli.stderr.read() if cli.stderr else ""
            reader.join(timeout=10)
            assert lines == ["first\n", "second\n", "third\n"]
            request = pb.GetTaskLogsRequest(
                task_id=future.task_id, follow=True, offset=answer.next_offset, wait_ms=10_000
            )
            last = client.call(client.rpc.get_task_logs, request)
            assert last.finished and last.output.text == "second\nthird\n"
            assert last.next_offset == len("first\nsecond\nthird\n")
    finally:
        gate.write_text("open")
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()
        if cli is not None:
            for stream in (cli.stdout, cli.stderr):
                if stream is not None:
                    stream.close()
        client.close()


def test_watch_finished_and_follow_answer_when_output_arrives(controller: ControllerServer) -> None:
    with FrayControllerClientSync(controller.address) as client:
        spec = pb.TaskSpec(function=b"fn", args=b"a", name="t", owner="me")
        (task_id,) = client.submit_tasks(pb.SubmitTasksRequest(tasks=[spec])).task_ids
        client.register_worker(pb.RegisterWorkerRequest(worker_id="w1", slots=1))
        (leased,) = client.lease_tasks(pb.LeaseTasksRequest(worker_id="w1", wait_ms=2000)).tasks
        first = client.watch_finished(
            pb.WatchFinishedRequest(owner="me", watch_output=True, wait_ms=0)
        )  # from now on the controller keeps our tasks' output
        assert not first.output and first.next_output_cursor == 0
        answers: dict[str, Any] = {}

        def watch() -> None:
            request = pb.WatchFinishedRequest(
                owner="me", watch_output=True, wait_ms=30_000, controller_id=first.controller_id
            )
            answers["watch"] = client.watch_finished(request)

        def follow(offset: int) -> None:
            request = pb.GetTaskLogsRequest(
                task_id=task_id, follow=True, offset=offset, wait_ms=30_000
            )
            answers["follow"] = client.get_task_logs(request)

        watcher = threading.Thread(target=watch)
        follower = threading.Thread(target=follow, args=(0,))
        watcher.start()
        follower.start()
        started = time.monotonic()
        live = pb.TaskOutputChunk(task_id=task_id, attempt=leased.attempt, text="first\n", pid=3)
        elsewhere = chunk("d1", 0, "not mine\n", owner="someone-else")
        direct = chunk("d2", 0, "direct\n", owner="me")
        client.report_results(
            pb.ReportResultsRequest(worker_id="w1", output_chunks=[live, elsewhere, direct])
        )
        watcher.join(timeout=20)
        follower.join(timeout=20)
        assert time.monotonic() - started < 15  # woken by the chunks, not by the deadline
        watched = answers["watch"]
        assert not watched.finished and watched.next_output_cursor == 2
        assert [(c.task_id, c.owner, c.name, c.text) for c in watched.output] == [
            (task_id, "me", "t", "first\n"),  # owner and name from the task's record
            ("d2", "me", "f", "direct\n"),
        ]
        followed = answers["follow"]
        assert not followed.finished and followed.output.text == "first\n"
        assert followed.next_offset == 6 and followed.output.pid == 3
        # No follow: as before, nothing until the task ends.
        plain = client.get_task_logs(pb.GetTaskLogsRequest(task_id=task_id))
        assert not plain.finished and not plain.HasField("output")

        follower = threading.Thread(target=follow, args=(6,))
        follower.start()
        result = pb.TaskResult(
            task_id=task_id,
            attempt=leased.attempt,
            value=b"v",
            output=pb.TaskOutput(text="first\nlast\n", pid=3),
        )
        client.report_results(pb.ReportResultsRequest(worker_id="w1", results=[result]))
        follower.join(timeout=20)
        followed = answers["follow"]
        assert followed.finished and followed.output.text == "last\n"
        assert followed.output.dropped_bytes == 6 and followed.next_offset == 11
        watched = client.watch_finished(
            pb.WatchFinishedRequest(
                owner="me", watch_output=True, output_cursor=2, controller_id=first.controller_id
            )
        )
        assert [t.task_id for t in watched.finished] == [task_id]
        assert watched.finished[0].output.text == "first\nlast\n"  # the final output
        assert not watched.output and watched.next_output_cursor == 2


# ---------------------------------------------------------------------- # worker
# The executor's "out" messages, the slot turning them into chunks, the reporter sending them.

WAIT = 30.0  # the longest a worker test (or a task of it) waits for what should come soon


def _wait_for_file(path: str) -> None:
    """In a task: block until the test creates `path` (bounded)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def prints_a_then_b(go_b: str, go_end: str) -> str:
    print("a")
    _wait_for_file(go_b)
    print("b")
    _wait_for_file(go_end)
    return "done"


def floods(lines: int, go_end: str) -> int:
    for i in range(lines):
        print(f"{i:07d} " + "x" * 91)  # 100 bytes a line
    _wait_for_file(go_end)
    return lines


def silent_for(seconds: float) -> int:
    time.sleep(seconds)
    return 7


def prints_forever() -> None:
    i = 0
    while True:
        print(f"tick {i}")
        i += 1
        time.sleep(0.01)


@pytest.fixture
def executor_conn() -> Iterator[multiprocessing.connection.Connection]:
    """A real executor process and the worker's end of its pipe."""
    ctx = executor.context()
    parent, child = ctx.Pipe()
    process = ctx.Process(target=executor.main, args=(child, os.getpid()), daemon=True)
    process.start()
    child.close()
    try:
        yield parent
    finally:
        parent.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


def _send_task(conn: multiprocessing.connection.Connection, fn: Any, *args: Any) -> None:
    no_objects: list[str] = []
    header = (cloudpickle.dumps(fn), cloudpickle.dumps((args, {})), no_objects)
    conn.send_bytes(pickle.dumps(header))


def _receive(conn: multiprocessing.connection.Connection) -> tuple[Any, ...]:
    assert conn.poll(WAIT), "the executor sent nothing"
    message: tuple[Any, ...] = pickle.loads(conn.recv_bytes())
    return message


def test_executor_streams_output_while_the_task_runs(
    executor_conn: multiprocessing.connection.Connection, tmp_path: Path
) -> None:
    go_b, go_end = str(tmp_path / "b"), str(tmp_path / "end")
    _send_task(executor_conn, prints_a_then_b, go_b, go_end)
    # The task waits for us: "a" can only have come while it runs.
    assert _receive(executor_conn) == ("out", 0, b"a\n")
    Path(go_b).touch()
    assert _receive(executor_conn) == ("out", 2, b"b\n")
    Path(go_end).touch()
    status, data, output = _receive(executor_conn)
    assert status == "ok" and cloudpickle.loads(data) == "done"
    assert output == (b"a\nb\n", 0)  # the reply still carries the whole output


def test_executor_chunk_offsets_account_for_dropped_bytes(
    executor_conn: multiprocessing.connection.Connection, tmp_path: Path
) -> None:
    lines = 2048  # 200 KiB, more than the 64 KiB an executor keeps
    printed = b"".join(f"{i:07d} {'x' * 91}\n".encode() for i in range(lines))
    go_end = str(tmp_path / "end")
    _send_task(executor_conn, floods, lines, go_end)
    end = offset = 0
    while end < len(printed):  # until the chunk that ends where the task stopped printing
        kind, offset, text = _receive(executor_conn)
        assert kind == "out"
        assert offset >= end  # in order; a gap is what was dropped between two sends
        assert len(text) <= capture.OUTPUT_LIMIT
        assert text == printed[offset : offset + len(text)]  # exactly where it was printed
        end = offset + len(text)
    assert end == len(printed) and offset > 0  # the first 136 KiB were dropped, and said so
    Path(go_end).touch()
    status, _, output = _receive(executor_conn)
    assert status == "ok"
    data, dropped = output
    assert dropped + len(data) == len(printed) and data == printed[dropped:]


def test_executor_sends_nothing_for_a_silent_task(
    executor_conn: multiprocessing.connection.Connection,
) -> None:
    _send_task(executor_conn, silent_for, 2 * executor.LIVE_INTERVAL)
    status, data, output = _receive(executor_conn)  # the reply first, and nothing else
    assert status == "ok" and cloudpickle.loads(data) == 7 and output is None
    _send_task(executor_conn, silent_for, 0.0)  # the executor still serves tasks
    assert _receive(executor_conn)[0] == "ok"


class _SlotHarness:
    """A real slot (its executor process), driven by the test instead of its thread."""

    def __init__(self) -> None:
        self.chunks: list[tuple[pb.LeasedTask, pb.TaskOutputChunk]] = []
        duties = SlotDuties(
            worker_id="w-live",
            next_task=lambda claim: None,
            finished=lambda result, seconds: None,
            fetch_object=lambda object_id: b"",
            stopping_hard=threading.Event(),
            give_up=lambda: None,
            printed=lambda task, chunk: self.chunks.append((task, chunk)),
        )
        self.slot = Slot(duties, 0)
        self.slot.start_process()

    def run(self, task: pb.LeasedTask) -> pb.TaskResult:
        self.slot._claim(task)
        return self.slot._execute(task)


@pytest.fixture
def live_slot() -> Iterator[_SlotHarness]:
    harness = _SlotHarness()
    try:
        yield harness
    finally:
        harness.slot.stop_process()


def test_slot_hands_chunks_to_the_worker_and_the_timeout_still_holds(
    live_slot: _SlotHarness,
) -> None:
    task = pb.LeasedTask(
        task_id="t-forever",
        attempt=3,
        function=cloudpickle.dumps(prints_forever),
        args=cloudpickle.dumps(((), {})),
        timeout_seconds=2.0,
    )
    started = time.monotonic()
    result = live_slot.run(task)
    took = time.monotonic() - started
    assert result.error.kind == pb.ERROR_KIND_TIMEOUT  # printing does not keep it alive
    assert 2.0 <= took < 2.0 + 10  # the timeout counts from the start, not from each chunk
    assert live_slot.chunks, "a task printing for 2 s sent no live output"
    end = 0
    for seen, chunk in live_slot.chunks:
        assert seen is task
        assert chunk.task_id == "t-forever" and chunk.attempt == 3
        assert chunk.worker_id == "w-live" and chunk.pid > 0
        assert chunk.offset == end  # ~50 lines per 0.5 s: nothing dropped
        assert chunk.text.startswith("tick ")
        end += len(chunk.text.encode())
    # The slot runs the next task in a new executor.
    task = pb.LeasedTask(
        task_id="t-next",
        attempt=1,
        function=cloudpickle.dumps(silent_for),
        args=cloudpickle.dumps(((0.0,), {})),
    )
    assert cloudpickle.loads(live_slot.run(task).value) == 7


def test_slot_chunks_of_a_direct_task_say_attempt_1(
    live_slot: _SlotHarness, tmp_path: Path
) -> None:
    go_b, go_end = str(tmp_path / "b"), str(tmp_path / "end")
    task = pb.LeasedTask(
        task_id="t-direct",
        attempt=0,  # results.DIRECT_ATTEMPT
        function=cloudpickle.dumps(prints_a_then_b),
        args=cloudpickle.dumps(((go_b, go_end), {})),
    )

    def release() -> None:  # the test's side of the task's waits, as chunks come
        deadline = time.monotonic() + WAIT
        while len(live_slot.chunks) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(go_b).touch()
        while len(live_slot.chunks) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(go_end).touch()

    releaser = threading.Thread(target=release)
    releaser.start()
    result = live_slot.run(task)
    releaser.join()
    assert cloudpickle.loads(result.value) == "done"
    seen = [(c.attempt, c.offset, c.text) for _, c in live_slot.chunks]
    assert seen == [(1, 0, "a\n"), (1, 2, "b\n")]
    assert result.output.text == "a\nb\n"


class _FakeController:
    """Stands for the controller's client: records ReportResults requests, or is away."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, pb.ReportResultsRequest]] = []
        self.away = False
        self.sent = threading.Condition()
        self.rpc = self

    def report_results(self, request: pb.ReportResultsRequest) -> None:
        raise AssertionError("called through call()")

    def call(self, method: Any, request: pb.ReportResultsRequest) -> pb.ReportResultsResponse:
        if self.away:
            raise ControllerUnavailableError("away")
        copy = pb.ReportResultsRequest()
        copy.CopyFrom(request)
        with self.sent:
            self.requests.append((time.monotonic(), copy))
            self.sent.notify_all()
        return pb.ReportResultsResponse()


def _reporter(client: _FakeController) -> tuple[reporter.Reporter, threading.Event]:
    stop = threading.Event()
    fake: Any = client
    return reporter.Reporter(fake, "w-live", threading.RLock(), stop, lambda batch: None), stop


def _chunk(task_id: str, offset: int, text: str) -> pb.TaskOutputChunk:
    return pb.TaskOutputChunk(task_id=task_id, attempt=1, offset=offset, text=text)


def test_reporter_sends_chunks_soon_without_results() -> None:
    client = _FakeController()
    report, stop = _reporter(client)
    thread = threading.Thread(target=report.loop)
    thread.start()
    try:
        added = time.monotonic()
        report.add_output(_chunk("t1", 0, "hello\n"))
        with client.sent:
            assert client.sent.wait_for(lambda: client.requests, WAIT)
        at, request = client.requests[0]
        assert list(request.output_chunks) == [_chunk("t1", 0, "hello\n")]
        assert not request.results
        assert at - added >= reporter.OUTPUT_REPORT_DELAY * 0.9  # gathered a while, not at once
    finally:
        stop.set()
        report.wake_all()
        thread.join(WAIT)
    assert not thread.is_alive()


def test_reporter_sends_a_tasks_chunks_with_or_before_its_result() -> None:
    client = _FakeController()
    report, _ = _reporter(client)
    report.add_output(_chunk("t1", 0, "a\n"))
    report.add_output(_chunk("t2", 0, "other\n"))
    report.add_output(_chunk("t1", 2, "b\n"))
    report.add(pb.TaskResult(task_id="t1", attempt=1, value=b"v"))
    report.send()
    (_, request), *_ = client.requests
    assert [r.task_id for r in request.results] == ["t1"]
    assert [(c.task_id, c.offset) for c in request.output_chunks if c.task_id == "t1"] == [
        ("t1", 0),
        ("t1", 2),
    ]


def test_reporter_bounds_chunks_while_the_controller_is_away() -> None:
    client = _FakeController()
    report, _ = _reporter(client)
    client.away = True
    text = "y" * 1000
    count = 2 * reporter.OUTPUT_TASK_BACKLOG // len(text)
    for i in range(count):
        report.add_output(_chunk("t1", i * len(text), text))
        if i % 50 == 0:
            report.send()  # fails: the chunks are kept, within bounds
    assert report._output_total <= reporter.OUTPUT_TASK_BACKLOG
    assert report.output_dropped > 0
    client.away = False
    report.flush()
    offsets = [c.offset for _, r in client.requests for c in r.output_chunks]
    assert offsets == sorted(offsets) and offsets[-1] == (count - 1) * len(text)  # the newest
    assert len(offsets) * len(text) <= reporter.OUTPUT_TASK_BACKLOG  # the oldest were dropped
    for _, request in client.requests:  # chunk text per request is bounded too
        assert request.ByteSize() <= reporter.OUTPUT_REQUEST_BYTES + 2 * len(text)


def test_reporter_bounds_the_backlog_of_all_tasks() -> None:
    client = _FakeController()
    report, _ = _reporter(client)
    client.away = True
    text = "z" * 10_000
    tasks = 2 * reporter.OUTPUT_BACKLOG // (len(text) * 10)
    for t in range(tasks):
        for i in range(10):
            report.add_output(_chunk(f"t{t}", i * len(text), text))
    assert report._output_total <= reporter.OUTPUT_BACKLOG
    assert f"t{tasks - 1}" in report._output and "t0" not in report._output  # oldest went


def test_reporter_gathers_results_that_keep_coming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Results arriving one after the other go in one ReportResults once GATHER_COUNT wait,
    not one RPC per result; a lone result goes after GATHER_SECONDS."""
    monkeypatch.setattr(reporter, "GATHER_SECONDS", 30.0)  # the full batch is what sends it
    client = _FakeController()
    report, stop = _reporter(client)
    thread = threading.Thread(target=report.loop)
    thread.start()
    try:
        report.add(pb.TaskResult(task_id="t0", attempt=1, value=b"v"))
        time.sleep(0.1)  # the reporter woke and gathers: nothing sent yet
        assert not client.requests
        for i in range(1, reporter.GATHER_COUNT):
            report.add(pb.TaskResult(task_id=f"t{i}", attempt=1, value=b"v"))
        with client.sent:
            assert client.sent.wait_for(lambda: client.requests, WAIT)
        (_, request), *more = client.requests
        assert len(request.results) == reporter.GATHER_COUNT and not more  # the batch was full
        monkeypatch.setattr(reporter, "GATHER_SECONDS", 0.3)
        lone = time.monotonic()
        report.add(pb.TaskResult(task_id="last", attempt=1, value=b"v"))
        with client.sent:
            assert client.sent.wait_for(lambda: len(client.requests) == 2, WAIT)
        assert client.requests[1][0] - lone >= 0.25  # it waited for company, then went
    finally:
        stop.set()
        report.wake_all()
        thread.join(WAIT)
    assert not thread.is_alive()
