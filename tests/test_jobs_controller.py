"""fray.v2 jobs at the controller: `ControllerState` alone (fake clock, no processes) for the
rules (gang placement, holds, reports, stop, lost workers, reconcile, output, restarts), then
a real controller over HTTP/JSON with a fake worker (RegisterWorker, LeaseTasks with
reports_jobs, ReportJobs with output), the way curl would call it.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fray.controller.job_logs import JobLogs
from fray.controller.journal import Journal
from fray.controller.placement import Need
from fray.controller.records import (
    AlreadyExists,
    InvalidRequest,
    JobSpec,
    JobState,
    NotFound,
    ReplicaUpdate,
    TaskOutcome,
    TaskSpec,
)
from fray.controller.server import ControllerServer
from fray.controller.state import ControllerState

T0 = 1_000.0
HEARTBEAT_TIMEOUT = 10.0
Json = dict[str, Any]


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def now() -> list[float]:
    return [T0]


@pytest.fixture
def state(now: list[float]) -> ControllerState:
    return ControllerState(heartbeat_timeout=HEARTBEAT_TIMEOUT, clock=lambda: now[0])


def worker(state: ControllerState, worker_id: str, cpus: float = 4, **caps: float) -> None:
    state.register_worker(
        worker_id=worker_id, slots=1, cpus=cpus, capacities={"cpus": cpus, **caps}
    )
    state.reconcile_jobs(worker_id, [])  # its first lease: it runs job replicas


def job(
    state: ControllerState, name: str = "j", replicas: int = 1, owner: str = "me", **need: float
) -> str:
    spec = JobSpec(
        name=name, replicas=replicas, need=Need.of(need), entrypoint=b"payload", owner=owner
    )
    record, existed = state.submit_job(spec)
    assert not existed
    return record.job_id


def launches(state: ControllerState, worker_id: str) -> list[str]:
    starts, _ = state.take_job_orders(worker_id)
    return [f"{j.job_id}/{i}" for j, i in starts]


def report(state: ControllerState, worker_id: str, key: str, to: JobState, **kw: Any) -> list[str]:
    job_id, _, index = key.rpartition("/")
    return state.report_jobs(worker_id, [ReplicaUpdate(job_id, int(index), to, **kw)])


def states(state: ControllerState, job_id: str) -> tuple[JobState, list[JobState]]:
    record = state.get_job(job_id)
    return record.state, [r.state for r in record.replicas]


# ---------------------------------------------------------------------- submit


def test_submit_checks_and_is_idempotent(state: ControllerState) -> None:
    worker(state, "w1")
    spec = JobSpec(name="train", job_id="train-1", command=("echo", "hi"), owner="a")
    first, existed = state.submit_job(spec)
    assert not existed and first.state is JobState.RUNNING and first.spec.replicas == 1
    again, existed = state.submit_job(
        JobSpec(name="train", job_id="train-1", command=("echo",), owner="a")
    )
    assert existed and again is first
    with pytest.raises(AlreadyExists):
        state.submit_job(JobSpec(name="train", job_id="train-1", command=("x",), owner="b"))
    auto, _ = state.submit_job(JobSpec(name="eval", entrypoint=b"p"))
    assert auto.job_id.startswith("eval-") and len(auto.job_id) == len("eval-") + 8
    bad = [
        (JobSpec(name="", command=("x",)), "name"),
        (JobSpec(name="a/b", command=("x",)), "name"),
        (JobSpec(name="a", job_id="x/1", command=("x",)), "job_id"),
        (JobSpec(name="a"), "exactly one"),
        (JobSpec(name="a", entrypoint=b"p", command=("x",)), "exactly one"),
        (JobSpec(name="a", command=("x",), replicas=1001), "replicas"),
        (JobSpec(name="a", command=("x",), env={"A=B": "c"}), "env"),
    ]
    for spec, word in bad:
        with pytest.raises(InvalidRequest, match=word):
            state.submit_job(spec)
    with pytest.raises(NotFound, match="job nope"):
        state.get_job("nope")


# ---------------------------------------------------------------------- placement


def test_gang_is_all_or_nothing(state: ControllerState) -> None:
    worker(state, "w1", cpus=2)
    worker(state, "w2", cpus=2)
    job_id = job(state, replicas=3, cpus=2)
    assert states(state, job_id) == (JobState.PENDING, [JobState.PENDING] * 3)
    assert state.workers["w1"].used == {} and launches(state, "w1") == []
    assert "at most 2 of its 3 replicas" in state.job_pending_reason(state.get_job(job_id))
    assert state.unplaceable_jobs() == {state.job_pending_reason(state.get_job(job_id)): 3}
    worker(state, "w3", cpus=2)  # now it fits: placed at once
    assert states(state, job_id) == (JobState.RUNNING, [JobState.RUNNING] * 3)
    placed = {r.worker_id for r in state.get_job(job_id).replicas}
    assert placed == {"w1", "w2", "w3"}
    assert all(state.workers[w].used == {"cpus": 2} for w in placed)
    assert launches(state, "w1") + launches(state, "w2") + launches(state, "w3") == [
        f"{job_id}/{i}" for i in range(3)
    ]
    assert state.job_pending_reason(state.get_job(job_id)) == ""


def test_replicas_share_a_worker_and_label_reasons(state: ControllerState) -> None:
    worker(state, "w1", cpus=4)
    job_id = job(state, replicas=2, cpus=2)
    assert [r.worker_id for r in state.get_job(job_id).replicas] == ["w1", "w1"]
    assert state.workers["w1"].used == {"cpus": 4}
    assert state.job_replicas_on("w1") == [f"{job_id}/0", f"{job_id}/1"]
    gpu = job(state, name="g", gpus=1)
    assert "gpus=1" in state.job_pending_reason(state.get_job(gpu))


def test_pending_jobs_block_nothing_and_holds_release(state: ControllerState) -> None:
    worker(state, "w1", cpus=4)
    big = job(state, name="big", cpus=8)  # never fits here
    first = job(state, name="first", cpus=3)
    second = job(state, name="second", cpus=3)  # waits for first
    assert states(state, big)[0] is JobState.PENDING
    assert states(state, first)[0] is JobState.RUNNING
    assert states(state, second)[0] is JobState.PENDING
    launches(state, "w1")
    report(state, "w1", f"{first}/0", JobState.RUNNING, pid=42)
    assert state.get_job(first).replicas[0].pid == 42
    report(state, "w1", f"{first}/0", JobState.SUCCEEDED)
    assert states(state, first) == (JobState.SUCCEEDED, [JobState.SUCCEEDED])
    assert states(state, second)[0] is JobState.RUNNING  # placed in the room first left
    assert state.workers["w1"].used == {"cpus": 3}
    assert launches(state, "w1") == [f"{second}/0"]


def test_placement_retried_when_a_task_releases(state: ControllerState) -> None:
    worker(state, "w1", cpus=4)
    (task_id,) = state.submit([TaskSpec(b"fn", b"args", need=Need.of({"cpus": 4}))])
    leased, _ = state.lease("w1")
    assert [t.task_id for t in leased] == [task_id]
    job_id = job(state, cpus=2)
    assert states(state, job_id)[0] is JobState.PENDING
    state.report("w1", [TaskOutcome(task_id, 1, value=b"v")])
    assert states(state, job_id)[0] is JobState.RUNNING
    assert state.workers["w1"].used == {"cpus": 2}


# ---------------------------------------------------------------------- ends


def test_a_failed_replica_fails_the_job_and_stops_the_others(state: ControllerState) -> None:
    worker(state, "w1", cpus=2)
    worker(state, "w2", cpus=2)
    job_id = job(state, replicas=2, cpus=2)
    launches(state, "w1")
    launches(state, "w2")
    stops = report(state, "w1", f"{job_id}/0", JobState.FAILED, exit_code=3, error="Traceback")
    assert stops == []
    record = state.get_job(job_id)
    assert states(state, job_id) == (JobState.FAILED, [JobState.FAILED, JobState.KILLED])
    assert record.error == "replica 0: Traceback" and record.finished_at == T0
    assert state.workers["w1"].used == {} and state.workers["w2"].used == {"cpus": 2}
    assert state.take_job_orders("w2") == ([], [f"{job_id}/1"])
    # the worker says it ran, then that it stopped: only then is its capacity free
    assert report(state, "w2", f"{job_id}/1", JobState.RUNNING, pid=7) == [f"{job_id}/1"]
    report(state, "w2", f"{job_id}/1", JobState.KILLED, exit_code=-15)
    assert state.workers["w2"].used == {}
    assert states(state, job_id) == (JobState.FAILED, [JobState.FAILED, JobState.KILLED])
    failed = job(state, name="exit")
    launches(state, "w1")
    report(state, "w1", f"{failed}/0", JobState.FAILED, exit_code=2)
    assert "exited with code 2" in state.get_job(failed).error


def test_stop_kills_at_once(state: ControllerState) -> None:
    worker(state, "w1", cpus=2)
    worker(state, "w2", cpus=2)
    job_id = job(state, replicas=2, cpus=2)
    assert launches(state, "w1") == [f"{job_id}/0"]  # told; w2 not yet
    stopped = state.stop_job(job_id)
    assert states(state, job_id) == (JobState.KILLED, [JobState.KILLED] * 2)
    assert stopped.finished_at == T0
    assert state.workers["w2"].used == {}  # never told: released at once
    assert state.take_job_orders("w2") == ([], [])
    assert state.workers["w1"].used == {"cpus": 2}
    assert state.take_job_orders("w1") == ([], [f"{job_id}/0"])
    report(state, "w1", f"{job_id}/0", JobState.KILLED)
    assert state.workers["w1"].used == {}
    assert state.stop_job(job_id).state is JobState.KILLED  # again: unchanged
    pending = job(state, name="p", cpus=100)
    assert state.stop_job(pending).state is JobState.KILLED
    assert states(state, pending)[1] == [JobState.KILLED]


def test_worker_lost_fails_the_job(state: ControllerState, now: list[float]) -> None:
    worker(state, "w1", cpus=2)
    worker(state, "w2", cpus=2)
    job_id = job(state, replicas=2, cpus=2)
    launches(state, "w1")
    launches(state, "w2")
    now[0] += HEARTBEAT_TIMEOUT / 2
    state.heartbeat("w2")
    now[0] += HEARTBEAT_TIMEOUT / 2 + 1
    assert state.expire_workers() == ["w1"]
    record = state.get_job(job_id)
    assert states(state, job_id) == (JobState.FAILED, [JobState.FAILED, JobState.KILLED])
    assert record.replicas[0].error.startswith("worker w1 lost")
    assert record.error.startswith("replica 0: worker w1 lost")
    assert state.take_job_orders("w2") == ([], [f"{job_id}/1"])
    # unregistering counts as lost too; it also frees what a stopped replica held
    state.unregister_worker("w2")
    assert state.job_replicas_on("w2") == []
    worker(state, "w3", cpus=2)
    other = job(state, name="o", cpus=2)
    state.unregister_worker("w3")
    assert state.get_job(other).error == "replica 0: worker w3 lost (left (shut down))"


# ---------------------------------------------------------------------- reconcile


def test_reconcile_repairs_lost_messages(state: ControllerState) -> None:
    worker(state, "w1", cpus=8)
    lost_launch = job(state, name="a")
    started = job(state, name="b")
    assert launches(state, "w1") == [f"{lost_launch}/0", f"{started}/0"]
    report(state, "w1", f"{started}/0", JobState.RUNNING, pid=9)
    # the lease answer with the launches was lost: the worker lists neither
    assert state.reconcile_jobs("w1", ["stray/0", "other-job/3"])
    assert states(state, started) == (JobState.FAILED, [JobState.FAILED])
    assert state.get_job(started).replicas[0].error == "its process was lost"
    starts, stops = state.take_job_orders("w1")
    assert [(j.job_id, i) for j, i in starts] == [(lost_launch, 0)]  # sent again
    assert sorted(stops) == ["other-job/3", "stray/0"]
    # listed now: nothing to repair; a stopped one listed is told to stop (again)
    assert not state.reconcile_jobs("w1", [f"{lost_launch}/0"])
    state.stop_job(lost_launch)
    assert state.take_job_orders("w1") == ([], [f"{lost_launch}/0"])
    assert state.reconcile_jobs("w1", [f"{lost_launch}/0"])
    assert state.take_job_orders("w1") == ([], [f"{lost_launch}/0"])
    # no longer listed (it ended, or never started): its capacity is free
    assert state.reconcile_jobs("w1", [])
    assert state.job_replicas_on("w1") == []
    # a launch not sent yet is not resent twice
    fresh = job(state, name="c")
    assert not state.reconcile_jobs("w1", [])
    assert launches(state, "w1") == [f"{fresh}/0"]


# ---------------------------------------------------------------------- output


def test_output_offsets_repeats_and_bounds(state: ControllerState) -> None:
    worker(state, "w1")
    job_id = job(state)
    launches(state, "w1")
    key = f"{job_id}/0"
    report(state, "w1", key, JobState.RUNNING, pid=5, output=b"hello ", output_offset=0)
    report(state, "w1", key, JobState.RUNNING, output=b"hello world", output_offset=0)  # repeat
    assert state.read_job_logs(job_id, 0, 0) == (b"hello world", 11, 0, False)
    assert state.read_job_logs(job_id, 0, 6) == (b"world", 11, 0, False)
    assert state.read_job_logs(job_id, 0, 11) == (b"", 11, 0, False)
    report(state, "w1", key, JobState.SUCCEEDED, output=b"!", output_offset=11)
    assert state.read_job_logs(job_id, 0, 11) == (b"!", 12, 0, True)
    with pytest.raises(InvalidRequest, match="replicas 0 to 0"):
        state.read_job_logs(job_id, 1, 0)
    with pytest.raises(InvalidRequest, match="offset"):
        state.read_job_logs(job_id, 0, -1)

    logs = JobLogs(max_replica_bytes=10, max_total_bytes=21)
    assert logs.append("a/0", 0, b"0123456789abc")
    assert logs.read("a/0", 0) == (b"3456789abc", 13, 3)
    assert logs.read("a/0", 5) == (b"56789abc", 13, 0)
    assert not logs.append("a/0", 4, b"456")  # nothing new
    assert logs.append("a/0", 20, b"xy")  # a gap (a controller restart): dropped
    assert logs.read("a/0", 13) == (b"xy", 22, 7)
    logs.append("b/0", 0, b"0123456789")
    logs.ended("a/0")
    logs.append("c/0", 0, b"0123456789")  # over the total: the ended one goes first
    assert logs.read("a/0", 20) == (b"", 22, 2) and logs.size == 20
    assert logs.read("b/0", 0) == (b"0123456789", 10, 0)


# ---------------------------------------------------------------------- durable


def test_jobs_survive_a_restart(tmp_path: Path, now: list[float]) -> None:
    path = tmp_path / "state.db"
    state = ControllerState(heartbeat_timeout=HEARTBEAT_TIMEOUT, clock=lambda: now[0])
    journal = Journal.open(state, path)
    worker(state, "w1", cpus=4)
    running = job(state, name="run", replicas=2, cpus=2)
    waiting = job(state, name="wait", cpus=2)
    done = job(state, name="done", gpus=1)
    state.stop_job(done)
    launches(state, "w1")
    report(state, "w1", f"{running}/0", JobState.RUNNING, pid=11, output=b"x")
    journal.save_now()
    journal.close_now()

    again = ControllerState(heartbeat_timeout=HEARTBEAT_TIMEOUT, clock=lambda: now[0])
    journal = Journal.open(again, path)
    try:
        assert list(again.jobs) == [running, waiting, done]
        record = again.get_job(running)
        assert record.state is JobState.RUNNING and record.replicas[0].pid == 11
        assert record.spec.need == Need.of({"cpus": 2}) and record.spec.entrypoint == b"payload"
        assert again.workers["w1"].used == {"cpus": 4}  # held again at load
        assert states(again, waiting)[0] is JobState.PENDING
        assert states(again, done)[0] is JobState.KILLED
        assert again.read_job_logs(running, 0, 0)[0] == b""  # output is not durable
        # launches are not saved: the worker's next lease gets the unconfirmed one again
        assert again.reconcile_jobs("w1", [f"{running}/0"])
        starts, _ = again.take_job_orders("w1")
        assert [(j.job_id, i) for j, i in starts] == [(running, 1)]
        again.stop_job(running)
        report(again, "w1", f"{running}/0", JobState.KILLED)
        report(again, "w1", f"{running}/1", JobState.KILLED)
        assert states(again, waiting)[0] is JobState.RUNNING
        journal.save_now()
    finally:
        journal.close_now()
    third = ControllerState(heartbeat_timeout=HEARTBEAT_TIMEOUT, clock=lambda: now[0])
    journal = Journal.open(third, path)
    try:
        assert states(third, running)[0] is JobState.KILLED
        assert third.workers["w1"].used == {"cpus": 2}
    finally:
        journal.close_now()


def test_finished_jobs_are_bounded(tmp_path: Path, now: list[float]) -> None:
    state = ControllerState(clock=lambda: now[0], max_finished_jobs=2)
    journal = Journal.open(state, tmp_path / "state.db")
    ids = []
    for i in range(4):
        now[0] += 1
        ids.append(job(state, name=f"j{i}", cpus=1))
        state.stop_job(ids[-1])
    assert list(state.jobs) == ids[2:]
    journal.save_now()
    journal.close_now()
    again = ControllerState(clock=lambda: now[0], max_finished_jobs=2)
    journal = Journal.open(again, tmp_path / "state.db")
    try:
        assert list(again.jobs) == ids[2:]
    finally:
        journal.close_now()


# ---------------------------------------------------------------------- over the wire

SERVICE_PATH = "/fray.v1.FrayController/"


@pytest.fixture
def http(controller: ControllerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=controller.address + SERVICE_PATH, timeout=20.0) as client:
        yield client


def call(client: httpx.Client, method: str, body: Json) -> Json:
    response = client.post(method, json=body)
    assert response.status_code == 200, (method, response.status_code, response.text)
    return response.json()


def error(client: httpx.Client, method: str, body: Json) -> tuple[str, str]:
    response = client.post(method, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return response.json()["code"], response.json()["message"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def lease(client: httpx.Client, worker_id: str, listed: list[str], wait_ms: int = 0) -> Json:
    return call(
        client,
        "LeaseTasks",
        {
            "workerId": worker_id,
            "waitMs": wait_ms,
            "reportsJobs": True,
            "jobReplicas": listed,
            "reportsHeld": True,
        },
    )


def report_jobs(client: httpx.Client, worker_id: str, **update: Any) -> Json:
    return call(client, "ReportJobs", {"workerId": worker_id, "updates": [update]})


def test_a_job_over_the_wire(controller: ControllerServer, http: httpx.Client) -> None:
    resources = {"cpus": 4, "capacities": {"cpus": 4}}
    call(http, "RegisterWorker", {"workerId": "w1", "slots": 1, "resources": resources})
    call(http, "LeaseTasks", {"workerId": "w1", "reportsJobs": True})  # it runs job replicas
    spec = {
        "jobId": "hello-1",
        "name": "hello",
        "command": ["echo", "hi"],
        "env": {"A": "1"},
        "requirements": {"resources": {"cpus": 2}},
        "owner": "me",
    }
    submitted = call(http, "SubmitJob", {"job": spec})["job"]
    assert submitted["state"] == "JOB_STATE_RUNNING" and submitted["replicas"] == 1
    assert call(http, "SubmitJob", {"job": spec})["job"]["jobId"] == "hello-1"  # a repeat
    answer = lease(http, "w1", [])
    (launch,) = answer["startJobs"]
    assert launch["jobId"] == "hello-1" and launch["command"] == ["echo", "hi"]
    assert launch["env"] == {"A": "1"} and launch["replicas"] == 1

    workers = call(http, "ListWorkers", {})["workers"]
    assert workers[0]["jobReplicas"] == ["hello-1/0"]
    report_jobs(http, "w1", jobId="hello-1", index=0, state="JOB_STATE_RUNNING", pid=123)

    # GetJobLogs long-polls until output comes
    got: list[Json] = []
    reader = threading.Thread(
        target=lambda: got.append(
            call(http_for(http), "GetJobLogs", {"jobId": "hello-1", "waitMs": 10_000})
        )
    )
    reader.start()
    time.sleep(0.2)
    report_jobs(
        http, "w1", jobId="hello-1", index=0, state="JOB_STATE_RUNNING", output=b64(b"hi\n")
    )
    reader.join(15)
    assert base64.b64decode(got[0]["data"]) == b"hi\n" and got[0]["nextOffset"] == "3"
    assert not got[0].get("finished")

    # GetJob long-polls until the end
    waited: list[Json] = []
    waiter = threading.Thread(
        target=lambda: waited.append(
            call(http_for(http), "GetJob", {"jobId": "hello-1", "waitMs": 10_000})
        )
    )
    waiter.start()
    time.sleep(0.2)
    answer = lease(http, "w1", ["hello-1/0"])  # listed and running: nothing to repair
    assert not answer.get("startJobs") and not answer.get("stopJobReplicas")
    report_jobs(
        http,
        "w1",
        jobId="hello-1",
        index=0,
        state="JOB_STATE_SUCCEEDED",
        output=b64(b"bye\n"),
        outputOffset=3,
    )
    waiter.join(15)
    assert waited[0]["job"]["state"] == "JOB_STATE_SUCCEEDED"
    logs = call(http, "GetJobLogs", {"jobId": "hello-1", "offset": 3, "waitMs": 5000})
    assert base64.b64decode(logs["data"]) == b"bye\n" and logs["finished"]

    # curl-able reads (Connect GET)
    listed = http.get("ListJobs", params={"encoding": "json", "message": "{}"}).json()
    assert [j["jobId"] for j in listed["jobs"]] == ["hello-1"]
    summary = call(http, "GetClusterSummary", {})
    assert summary["jobsByState"]["SUCCEEDED"] == 1
    dashboard = httpx.get(controller.address + "/api/dashboard", timeout=20).json()
    assert [(j["job_id"], j["workers"]) for j in dashboard["jobs"]] == [("hello-1", ["w1"])]


def test_stop_and_errors_over_the_wire(http: httpx.Client) -> None:
    resources = {"cpus": 2, "capacities": {"cpus": 2}}
    call(http, "RegisterWorker", {"workerId": "w1", "slots": 1, "resources": resources})
    call(http, "LeaseTasks", {"workerId": "w1", "reportsJobs": True})  # it runs job replicas
    job_spec = {"name": "loop", "entrypoint": b64(b"x"), "replicas": 2}
    submitted = call(http, "SubmitJob", {"job": job_spec})["job"]
    job_id = submitted["jobId"]
    assert len(submitted["replicaStates"]) == 2
    assert {r["workerId"] for r in submitted["replicaStates"]} == {"w1"}
    assert len(lease(http, "w1", [])["startJobs"]) == 2
    stopped = call(http, "StopJob", {"jobId": job_id})["job"]
    assert stopped["state"] == "JOB_STATE_KILLED"
    answer = lease(http, "w1", [f"{job_id}/0", f"{job_id}/1"])
    assert sorted(answer["stopJobReplicas"]) == [f"{job_id}/0", f"{job_id}/1"]
    stops = report_jobs(http, "w1", jobId=job_id, index=0, state="JOB_STATE_KILLED")
    assert stops.get("stopJobReplicas", []) == []

    gpu = {"name": "gpu", "command": ["x"], "requirements": {"resources": {"gpus": 1}}}
    pending = call(http, "SubmitJob", {"job": gpu})["job"]
    assert pending["state"] == "JOB_STATE_PENDING"
    assert "gpus=1" in pending["pendingReason"]
    assert "gpus=1" in " ".join(call(http, "GetClusterSummary", {})["unplaceable"])

    cases: list[tuple[str, Json, str, str]] = [
        ("SubmitJob", {"job": {"name": "", "command": ["x"]}}, "invalid_argument", "name"),
        ("SubmitJob", {"job": {"name": "a"}}, "invalid_argument", "exactly one"),
        ("SubmitJob", {"job": {"name": "a", "command": ["x"], "replicas": -1}}, "", "replicas"),
        ("GetJob", {"jobId": "nope"}, "not_found", "nope"),
        ("StopJob", {"jobId": "nope"}, "not_found", "nope"),
        ("GetJobLogs", {"jobId": job_id, "replica": 5}, "invalid_argument", "replicas"),
        ("ListJobs", {"state": 99}, "invalid_argument", "state"),
        ("ReportJobs", {"workerId": "nobody"}, "not_found", "nobody"),
        (
            "ReportJobs",
            {"workerId": "w1", "updates": [{"jobId": job_id, "state": "JOB_STATE_PENDING"}]},
            "invalid_argument",
            "state",
        ),
    ]
    for method, body, code, word in cases:
        got_code, message = error(http, method, body)
        assert got_code == (code or "invalid_argument") and word in message, (method, message)


def http_for(client: httpx.Client) -> httpx.Client:
    return httpx.Client(base_url=client.base_url, timeout=20.0)


def test_jobs_survive_a_controller_restart_over_the_wire(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    resources = {"cpus": 2, "capacities": {"cpus": 2}}
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=60.0, state_path=path).start()
    try:
        with httpx.Client(base_url=server.address + SERVICE_PATH, timeout=20.0) as client:
            call(client, "RegisterWorker", {"workerId": "w1", "slots": 1, "resources": resources})
            call(client, "LeaseTasks", {"workerId": "w1", "reportsJobs": True})
            spec: Json = {"jobId": "keep", "name": "keep", "command": ["sleep", "1000"]}
            spec["requirements"] = {"resources": {"cpus": 2}}
            assert call(client, "SubmitJob", {"job": spec})["job"]["state"] == "JOB_STATE_RUNNING"
            assert len(lease(client, "w1", [])["startJobs"]) == 1
            report_jobs(client, "w1", jobId="keep", index=0, state="JOB_STATE_RUNNING", pid=77)
    finally:
        server.stop()
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=60.0, state_path=path).start()
    try:
        with httpx.Client(base_url=server.address + SERVICE_PATH, timeout=20.0) as client:
            job = call(client, "GetJob", {"jobId": "keep"})["job"]
            assert job["state"] == "JOB_STATE_RUNNING"
            assert job["replicaStates"][0]["pid"] == 77
            (worker,) = call(client, "ListWorkers", {})["workers"]
            assert worker["jobReplicas"] == ["keep/0"]
            assert not worker.get("free", {}).get("cpus")  # held again at load
            answer = lease(client, "w1", [])  # the worker lost it meanwhile
            assert not answer.get("startJobs")
            job = call(client, "GetJob", {"jobId": "keep"})["job"]
            assert job["state"] == "JOB_STATE_FAILED"
            assert job["error"] == "replica 0: its process was lost"
    finally:
        server.stop()
