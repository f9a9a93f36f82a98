"""Job replicas on a worker: started on `JobLaunch`, tailed, stopped, reported (`ReportJobs`).

Each replica is a `fray.common.job_process.JobProcess` (fray's job bootstrap; a command runs as
`run_command(argv)`), leading a session of its own, with stdout and stderr in one file under
the worker's temp dir. If the worker is SIGKILLed, each replica notices (a watchdog on the
worker's pid) and kills its session.

One thread (`loop`) tails every replica's output every `TAIL_INTERVAL` seconds and sends what
is new in one `ReportJobs` call: RUNNING with the pid first, then output chunks (at most
`CHUNK_BYTES` each, with their offsets), then the final state after the last output: SUCCEEDED
(exit 0), FAILED (the Python traceback, "the job's process exited with code N", "... was killed
by signal N", "could not start: ..."), KILLED (stopped by order). An update counts as delivered
once the call was answered; while the controller is away the thread keeps trying. A replica is
listed (`listed`, for `LeaseTasksRequest.job_replicas`) from its launch until the answer to its
final update; then its files are removed. Stop orders (lease and ReportJobs answers) SIGTERM the
replica's process group and SIGKILL its session `STOP_GRACE` seconds later.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.common import job_process
from fray.common.job_process import JobProcess
from fray.errors import ControllerUnavailableError
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_BYTES", "JobReplicas", "replica_key"]

TAIL_INTERVAL = 0.2  # seconds between looks at the replicas' output
CHUNK_BYTES = 256 << 10  # output per update
REQUEST_BYTES = 4 << 20  # output per ReportJobs call (the rest goes in the next one, at once)
STOP_GRACE = job_process.STOP_GRACE  # SIGTERM, then SIGKILL this much later
_REMEMBERED = 1000  # finished replicas remembered, so a stale JobLaunch does not rerun them
_FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED)


def replica_key(job_id: str, index: int) -> str:
    """How the wire names a replica: ``JOB_ID/INDEX``."""
    return f"{job_id}/{index}"


@dataclass
class _Replica:
    key: str
    launch: pb.JobLaunch
    workdir: str
    process: JobProcess | None = None
    start_error: str = ""  # could not start: the final update says why
    sent: int = 0  # output bytes the controller has had
    started_sent: bool = False  # RUNNING + pid delivered
    kill_at: float | None = None  # stop asked: SIGKILL the session at this time
    cleaned: bool = False  # what it left behind was killed after it ended
    ready: bool = False  # started (or refused): the reporting thread may look at it


class JobReplicas:
    """The job replicas this worker runs (thread-safe). `loop` is the reporting thread.

    `env` is the base environment of every replica (the worker's, with its controller
    address and token), `controller_address` what FRAY_CLUSTER_SPEC defaults to pointing at.
    """

    def __init__(
        self,
        client: ControllerClient | None,
        worker_id: str,
        controller_address: str,
        *,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        tmp_root: str | None = None,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._controller = controller_address
        self._token = token
        self._env = None if env is None else dict(env)  # None: os.environ at each launch
        self._tmp_root = tmp_root
        self._dir: str | None = None  # made at the first launch
        self._replicas: dict[str, _Replica] = {}
        self._finished: deque[str] = deque(maxlen=_REMEMBERED)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._refusing = ""  # set at shutdown: why new replicas are refused

    def __len__(self) -> int:
        with self._lock:
            return len(self._replicas)

    # ------------------------------------------------------------------ orders

    def launch(self, launch: pb.JobLaunch) -> None:
        """Start a replica (a repeated order for one this worker has, or had, is ignored)."""
        key = replica_key(launch.job_id, launch.index)
        with self._lock:
            if key in self._replicas or key in self._finished:
                return
            replica = _Replica(key, launch, os.path.join(self._root(), _dir_name(launch)))
            self._replicas[key] = replica
            refusing = self._refusing
        if refusing:
            replica.start_error = f"could not start: {refusing}"
        else:
            self._start(replica)
            if replica.kill_at is not None and replica.process is not None:  # stopped meanwhile
                replica.process.terminate()
        replica.ready = True
        self._wake.set()

    def _start(self, replica: _Replica) -> None:
        launch = replica.launch
        env = self.replica_env(launch)
        cwd = launch.working_dir or None
        try:
            if launch.command:
                argv = list(launch.command)
                job_process.find_program(argv[0], env, cwd)
                payload = job_process.command_payload(argv)
            elif launch.entrypoint:
                payload = bytes(launch.entrypoint)
            else:
                raise ValueError("the launch order has neither an entrypoint nor a command")
            replica.process = JobProcess(payload, replica.workdir, env, cwd=cwd)
            logger.info("job replica %s started (pid %d)", replica.key, replica.process.pid)
        except Exception as exc:
            logger.warning("job replica %s could not start: %s", replica.key, exc)
            replica.start_error = f"could not start: {exc}"

    def replica_env(self, launch: pb.JobLaunch) -> dict[str, str]:
        """A replica's environment: the worker's, the job's, then fray's variables."""
        env = {**(os.environ if self._env is None else self._env), **launch.env}
        env.update(
            FRAY_CONTROLLER_ADDRESS=self._controller,
            FRAY_CLUSTER_SPEC=launch.env.get("FRAY_CLUSTER_SPEC")
            or f"fray?address={self._controller}",
            FRAY_JOB_ID=launch.job_id,
            FRAY_NUM_TASKS=str(max(launch.replicas, 1)),
            FRAY_TASK_INDEX=str(launch.index),
            FRAY_WORKER_ID=self._worker_id,
            PYTHONUNBUFFERED="1",
        )
        if self._token:
            env["FRAY_TOKEN"] = self._token
        return env

    def stop(self, keys: Iterable[str]) -> None:
        """Stop these replicas (SIGTERM now, SIGKILL after STOP_GRACE); unknown ones are
        ignored. They are reported KILLED once they ended."""
        now = time.monotonic()
        with self._lock:
            replicas = [self._replicas[k] for k in keys if k in self._replicas]
        for replica in replicas:
            if replica.kill_at is None:
                logger.info("stopping job replica %s", replica.key)
                replica.kill_at = now + STOP_GRACE
                if replica.process is not None:  # else `launch` will, once it started it
                    replica.process.terminate()
        if replicas:
            self._wake.set()

    def stop_all(self, refuse: str = "") -> None:
        """Stop every replica; with `refuse`, later launches fail with that reason."""
        with self._lock:
            if refuse:
                self._refusing = refuse
            keys = list(self._replicas)
        self.stop(keys)

    def listed(self) -> list[str]:
        """Every replica until its final update was answered (`LeaseTasks.job_replicas`)."""
        with self._lock:
            return list(self._replicas)

    # ------------------------------------------------------------------ tailing, reporting

    def loop(self) -> None:
        """The reporting thread, until `close`."""
        while not self._closed.is_set():
            try:
                more = self.report_once()
            except Exception:  # the thread must go on: replicas wait for it
                logger.exception("reporting job replicas failed")
                more = False
                self._closed.wait(1.0)
            if not more:
                self._wake.wait(TAIL_INTERVAL)
                self._wake.clear()

    def updates(self) -> list[tuple[_Replica, pb.JobReplicaUpdate]]:
        """What is new for the controller (at most REQUEST_BYTES of output); kills what is
        due to be killed."""
        now, budget, out = time.monotonic(), REQUEST_BYTES, []
        with self._lock:
            replicas = list(self._replicas.values())
        for replica in replicas:
            if not replica.ready:  # being started by `launch`
                continue
            update = self._update(replica, now, budget)
            if update is not None:
                out.append((replica, update))
                budget -= len(update.output)
                if budget <= 0:
                    break
        return out

    def _update(self, replica: _Replica, now: float, budget: int) -> pb.JobReplicaUpdate | None:
        launch, process = replica.launch, replica.process
        update = pb.JobReplicaUpdate(job_id=launch.job_id, index=launch.index)
        if process is None:  # never started
            update.state = pb.JOB_STATE_FAILED
            update.error = replica.start_error
            return update
        ended = process.returncode is not None
        if not ended and replica.kill_at is not None and now >= replica.kill_at:
            process.kill()  # SIGTERM was not enough
            ended = process.wait(1.0)
        if ended and not replica.cleaned:
            process.kill()  # what it left behind
            replica.cleaned = True
        data = process.read_log(replica.sent, min(CHUNK_BYTES, max(budget, 1)))
        update.pid = process.pid
        update.output_offset = replica.sent
        update.output = data
        if ended and not process.read_log(replica.sent + len(data), 1):
            _finish(update, process)
        elif data or not replica.started_sent:
            update.state = pb.JOB_STATE_RUNNING
        else:
            return None
        return update

    def report_once(self) -> bool:
        """Send one ReportJobs with what is new; True if more is waiting already."""
        batch = self.updates()
        if not batch:
            return False
        more = any(len(u.output) >= CHUNK_BYTES for _, u in batch)
        if self._client is None:  # no controller (tests): count them as delivered
            self.delivered(batch)
            return more
        request = pb.ReportJobsRequest(worker_id=self._worker_id, updates=[u for _, u in batch])
        try:
            # A short retry budget: stop orders' SIGKILLs wait for this thread.
            response = self._client.call(
                self._client.rpc.report_jobs, request, retry_timeout=5, quiet=True
            )
        except ControllerUnavailableError as exc:
            logger.warning("controller unreachable; job reports kept: %s", exc)
            self._closed.wait(1.0)
            return False
        except ConnectError as exc:
            if exc.code == Code.UNAVAILABLE:  # e.g. shutting down: its successor takes them
                logger.warning("job reports not taken (%s); trying again", exc.message)
                self._closed.wait(1.0)
                return False
            logger.error("job reports refused (%s); dropped", exc.message)
        else:
            self.stop(response.stop_job_replicas)
        self.delivered(batch)
        return more

    def delivered(self, batch: list[tuple[_Replica, pb.JobReplicaUpdate]]) -> None:
        """The controller has had these updates: advance, and forget finished replicas."""
        for replica, update in batch:
            replica.sent = max(replica.sent, update.output_offset + len(update.output))
            replica.started_sent = True
            if update.state in _FINAL:
                with self._lock:
                    self._replicas.pop(replica.key, None)
                    self._finished.append(replica.key)
                shutil.rmtree(replica.workdir, ignore_errors=True)
                logger.info("job replica %s ended: %s", replica.key, pb.JobState.Name(update.state))

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, timeout: float) -> None:
        """Stop every replica and report their ends (up to `timeout` seconds), then stop the
        reporting thread and remove the temp dir."""
        self.stop_all(refuse=f"worker {self._worker_id} is shutting down")
        deadline = time.monotonic() + timeout
        while len(self) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self.close()

    def close(self) -> None:
        """Kill what is left (no reports) and remove the temp dir."""
        self._closed.set()
        self._wake.set()
        with self._lock:
            replicas = list(self._replicas.values())
        for replica in replicas:
            if replica.process is not None and not replica.cleaned:  # a reaped pid may be reused
                replica.process.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _root(self) -> str:
        """The worker's temp dir for replicas (made once). Holds the lock."""
        if self._dir is None:
            prefix = f"fray-{_safe(self._worker_id)}-jobs-"
            self._dir = tempfile.mkdtemp(prefix=prefix, dir=self._tmp_root)
        return self._dir


def _finish(update: pb.JobReplicaUpdate, process: JobProcess) -> None:
    """The final state of an ended replica's update."""
    code = process.returncode
    update.exit_code = 0 if code is None else code
    status = process.status()
    if status == job_process.KILLED:
        update.state = pb.JOB_STATE_KILLED
    elif status == job_process.SUCCEEDED:
        update.state = pb.JOB_STATE_SUCCEEDED
    else:
        update.state = pb.JOB_STATE_FAILED
        update.error = process.error() or job_process.exit_description(code)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]


def _dir_name(launch: pb.JobLaunch) -> str:
    return f"{_safe(launch.job_id)}-{launch.index}-{uuid.uuid4().hex[:8]}"
