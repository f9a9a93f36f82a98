"""The stand-in's "controller": tasks as local subprocesses, endpoints as files.

``LocalClusterClient`` and ``RemoteClusterClient`` are Iris's low-level cluster clients; here
both reach a :class:`_Controller` kept per address in this process. Endpoints live in a
directory per address (under ``$IRIS_STANDIN_ROOT``), so tasks, which are other processes,
register and resolve them too.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iris.cluster.types import Entrypoint, EnvironmentSpec, ResourceSpec, is_job_finished
from iris.rpc import cluster_pb2

_KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a job is stopped


@dataclass
class EndpointRecord:
    endpoint_id: str
    name: str
    address: str
    job_id: str
    metadata: dict[str, str] = field(default_factory=dict)


class JobAlreadyExists(Exception):
    """A job id that is already running was submitted again."""


class _Task:
    def __init__(self, index: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.index = index
        self.proc = proc
        self.log = log
        self.exit_code: int | None = None


class _Job:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.state = cluster_pb2.JOB_STATE_PENDING
        self.error = ""
        self.tasks: list[_Task] = []


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class _Controller:
    def __init__(self, address: str) -> None:
        self.address = address
        base = Path(os.environ.get("IRIS_STANDIN_ROOT") or tempfile.gettempdir())
        self.root = base / "iris-standin" / hashlib.sha1(address.encode()).hexdigest()[:16]
        self.endpoints = self.root / "endpoints"
        self.endpoints.mkdir(parents=True, exist_ok=True)
        self.states = self.root / "jobstates"  # every job's status, for other processes
        self.states.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()

    # --- jobs -----------------------------------------------------------------------------

    def submit_job(
        self,
        job_id: str,
        entrypoint: Entrypoint,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None,
        ports: list[str] | None,
        replicas: int,
    ) -> None:
        job = _Job(job_id)
        with self.lock:
            old = self.jobs.get(job_id)
            if old is not None and not is_job_finished(old.state):
                raise JobAlreadyExists(job_id)
            self.jobs[job_id] = job
        jobdir = self.root / "jobs" / uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_PORT_")}
        env.update(
            PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path),
            IRIS_JOB_ID=job_id,
            IRIS_NUM_TASKS=str(replicas),
            IRIS_CONTROLLER_ADDRESS=self.address,
            IRIS_ADVERTISE_HOST="127.0.0.1",
            IRIS_PYTHON=sys.executable,
            IRIS_WORKER_ID="standin-worker",
        )
        if environment is not None:
            env.update(environment.env_vars or {})
        with self.lock:
            for index in range(replicas):
                workdir = jobdir / f"task-{index}"
                workdir.mkdir(parents=True)
                for name, data in entrypoint.workdir_files.items():
                    (workdir / name).write_bytes(data)
                task_env = dict(env, IRIS_TASK_INDEX=str(index), IRIS_WORKDIR=str(workdir))
                for port_name in ports or []:
                    task_env[f"IRIS_PORT_{port_name.upper()}"] = str(_free_port())
                log = workdir / "task.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        entrypoint.command,
                        cwd=workdir,
                        env=task_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                job.tasks.append(_Task(index, proc, log))
            job.state = cluster_pb2.JOB_STATE_RUNNING
        self._publish(job)
        for task in job.tasks:
            threading.Thread(target=self._watch, args=(job, task), daemon=True).start()

    def _watch(self, job: _Job, task: _Task) -> None:
        code = task.proc.wait()
        with self.lock:
            task.exit_code = code
            if is_job_finished(job.state):
                return
            if code != 0:
                job.state = cluster_pb2.JOB_STATE_FAILED
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                job.error = f"task {task.index} failed ({how})"
                others = [t for t in job.tasks if t is not task]
            elif all(t.exit_code == 0 for t in job.tasks):
                job.state = cluster_pb2.JOB_STATE_SUCCEEDED
                others = []
            else:
                return
        self._publish(job)
        for other in others:  # a failed task fails its job, whose other tasks are stopped
            self._stop(other)
        self._drop_endpoints(job.job_id)

    def _stop(self, task: _Task) -> None:
        if task.proc.poll() is not None:
            return
        _kill_group(task.proc, signal.SIGTERM)
        timer = threading.Timer(_KILL_GRACE, _kill_group, (task.proc, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def _state_file(self, job_id: str) -> Path:
        return self.states / f"{hashlib.sha1(job_id.encode()).hexdigest()}.json"

    def _publish(self, job: _Job) -> None:
        with self.lock:
            record = {"job_id": job.job_id, "state": job.state, "error": job.error}
            record["num_tasks"] = len(job.tasks)
        path = self._state_file(job.job_id)
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(record))
        tmp.rename(path)

    def _published(self, job_id: str) -> cluster_pb2.JobStatus | None:
        """The status another process published for ``job_id``."""
        try:
            return cluster_pb2.JobStatus(**json.loads(self._state_file(job_id).read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def job(self, job_id: str) -> _Job:
        with self.lock:
            job = self.jobs.get(str(job_id))
        if job is None:
            raise ValueError(f"Job {job_id} not found")
        return job

    def terminate_job(self, job_id: str) -> None:
        job = self.job(job_id)
        with self.lock:
            if is_job_finished(job.state):
                return
            job.state = cluster_pb2.JOB_STATE_KILLED
            job.error = "terminated"
        self._publish(job)
        for task in job.tasks:
            self._stop(task)
        self._drop_endpoints(job.job_id)

    def get_job_status(self, job_id: str) -> cluster_pb2.JobStatus:
        with self.lock:
            known = str(job_id) in self.jobs
        if not known and (published := self._published(str(job_id))) is not None:
            return published  # a job another process (the submitter) runs
        job = self.job(job_id)
        with self.lock:
            return cluster_pb2.JobStatus(
                job_id=job.job_id,
                state=job.state,
                error=job.error,
                num_tasks=len(job.tasks),
                tasks=[self._task_status(job, t) for t in job.tasks],
            )

    def _task_status(self, job: _Job, task: _Task) -> cluster_pb2.TaskStatus:
        if task.exit_code is None:
            state = cluster_pb2.TASK_STATE_RUNNING
            if job.state == cluster_pb2.JOB_STATE_KILLED:
                state = cluster_pb2.TASK_STATE_KILLED
        elif task.exit_code == 0:
            state = cluster_pb2.TASK_STATE_SUCCEEDED
        else:
            state = cluster_pb2.TASK_STATE_FAILED
        return cluster_pb2.TaskStatus(
            job_id=job.job_id, task_index=task.index, state=state, exit_code=task.exit_code or 0
        )

    def list_jobs(self) -> list[cluster_pb2.JobStatus]:
        """Every job of this address: this process's, and those other processes published."""
        with self.lock:
            ids = list(self.jobs)
        statuses = [self.get_job_status(job_id) for job_id in ids]
        for path in sorted(self.states.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                continue
            if record["job_id"] not in ids:
                statuses.append(cluster_pb2.JobStatus(**record))
        return statuses

    def list_tasks(self, job_id: str) -> list[cluster_pb2.TaskStatus]:
        return self.get_job_status(job_id).tasks

    def get_task_status(self, job_id: str, task_index: int) -> cluster_pb2.TaskStatus:
        return self.list_tasks(job_id)[task_index]

    def fetch_task_logs(
        self, task_id: str, start_ms: int = 0, max_lines: int = 0
    ) -> list[cluster_pb2.LogEntryProto]:
        job_id, sep, index = str(task_id).rpartition("/task-")
        if not sep:
            raise ValueError(f"not a task id: {task_id}")
        job = self.job(job_id)
        try:
            task = job.tasks[int(index)]
        except (IndexError, ValueError):
            raise ValueError(f"Task {task_id} not found") from None
        try:
            data = task.log.read_bytes()
            stamp = int(task.log.stat().st_mtime * 1000)
        except FileNotFoundError:
            return []
        lines = data.decode(errors="replace").splitlines()
        if stamp <= start_ms:
            return []
        entries = [cluster_pb2.LogEntryProto(timestamp_ms=stamp, data=line) for line in lines]
        return entries[-max_lines:] if max_lines else entries

    # --- endpoints ------------------------------------------------------------------------

    def register_endpoint(
        self, name: str, address: str, job_id: str, metadata: dict[str, str] | None = None
    ) -> str:
        record = EndpointRecord(uuid.uuid4().hex, name, address, str(job_id), metadata or {})
        tmp = self.endpoints / f".{record.endpoint_id}.tmp"
        tmp.write_text(json.dumps(record.__dict__))
        tmp.rename(self.endpoints / f"{record.endpoint_id}.json")
        return record.endpoint_id

    def unregister_endpoint(self, endpoint_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.endpoints / f"{endpoint_id}.json").unlink()

    def list_endpoints(self, prefix: str = "") -> list[EndpointRecord]:
        records = []
        for path in sorted(self.endpoints.glob("*.json")):
            try:
                record = EndpointRecord(**json.loads(path.read_text()))
            except (FileNotFoundError, ValueError):
                continue
            if record.name.startswith(prefix):
                records.append(record)
        return records

    def _drop_endpoints(self, job_id: str) -> None:
        for record in self.list_endpoints():
            if record.job_id == job_id or record.job_id.startswith(job_id + "/"):
                self.unregister_endpoint(record.endpoint_id)

    def kill_all(self) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            with contextlib.suppress(ValueError):
                self.terminate_job(job.job_id)
            for task in job.tasks:
                _kill_group(task.proc, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_controllers: dict[str, _Controller] = {}
_controllers_lock = threading.Lock()


def controller(address: str) -> _Controller:
    with _controllers_lock:
        found = _controllers.get(address)
        if found is None:
            found = _controllers[address] = _Controller(address)
        return found


def kill_all() -> None:
    """Stop every task this process started (tests call it when they finish)."""
    with _controllers_lock:
        controllers = list(_controllers.values())
    for ctl in controllers:
        ctl.kill_all()


atexit.register(kill_all)


class _ClusterClient:
    """What Iris's LocalClusterClient/RemoteClusterClient offer the client layer."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._ctl = controller(address)

    def submit_job(
        self,
        job_id: str,
        entrypoint: Entrypoint,
        resources: Any,
        environment: Any = None,
        ports: list[str] | None = None,
        replicas: int = 1,
        **_ignored: Any,
    ) -> None:
        self._ctl.submit_job(str(job_id), entrypoint, resources, environment, ports, replicas)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctl, name)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to close: the controller outlives its clients."""


class LocalClusterClient(_ClusterClient):
    @classmethod
    def create(cls, max_workers: int = 4, **_ignored: Any) -> LocalClusterClient:
        return cls(f"local-{uuid.uuid4().hex}")

    def shutdown(self, wait: bool = True) -> None:
        """A local cluster ends with its client: its tasks are stopped."""
        self._ctl.kill_all()
        shutil.rmtree(self._ctl.root, ignore_errors=True)


class RemoteClusterClient(_ClusterClient):
    def __init__(
        self,
        controller_address: str,
        bundle_gcs_path: str | None = None,
        bundle_blob: bytes | None = None,
        timeout_ms: int = 30000,
    ) -> None:
        super().__init__(controller_address)
