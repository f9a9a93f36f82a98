"""A job's process: fray's job bootstrap, :class:`JobProcess`, and :func:`run_command`.

A job process runs ``python -c BOOTSTRAP payload error-file launcher-pid cleanup-dir`` in a
session of its own (so it leads its session and its process group), with stdout and stderr in
one output file. ``payload`` holds a cloudpickled ``(fn, args, kwargs)``; a binary is the
call ``run_command(argv)``. The bootstrap needs only cloudpickle and the standard library (a
Ray node may not have fray). When its launcher dies, nobody can read its files any more: it
deletes the cleanup dir and kills every process of its session (a command it started, and
what that started), then exits.

Used by fray.v2's local and Ray backends (through :mod:`fray.v2.job`) and by fray's workers
(job replicas).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import cloudpickle

from fray.common import watchdog
from fray.common.processes import start_python

__all__ = [
    "KILLED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "JobProcess",
    "bootstrap_args",
    "command_payload",
    "dump_call",
    "find_program",
    "kill_session",
    "run_command",
]

# fray.common.watchdog's source comes first (exit_when_gone, kill_session); argv is (payload,
# error file, launcher pid, cleanup dir). ``payload`` is a file holding the cloudpickled
# ``(fn, args, kwargs)``, or ``module:NAME`` for the ``entrypoint.pkl`` inside the importable
# package NAME. An error file of ``-`` means none; a launcher pid of ``0`` means no launcher to
# watch. On the launcher's death: delete the cleanup dir, then kill the session (only when this
# process leads it: never another process's session), then exit.
_BOOTSTRAP_MAIN = """
import os, shutil, sys, traceback
def _launcher_gone():
    shutil.rmtree(sys.argv[4], ignore_errors=True)
    if os.getsid(0) == os.getpid():
        for _ in range(3):
            if not kill_session(os.getpid()):
                break
if sys.argv[3] != "0":
    exit_when_gone(int(sys.argv[3]), before_exit=_launcher_gone)
try:
    import cloudpickle
    path = sys.argv[1]
    if path.startswith("module:"):
        import importlib
        package = importlib.import_module(path[len("module:"):])
        path = os.path.join(os.path.dirname(package.__file__), "entrypoint.pkl")
    with open(path, "rb") as f:
        fn, args, kwargs = cloudpickle.load(f)
    del f, path
    fn(*args, **kwargs)
except SystemExit:
    raise
except BaseException:
    text = traceback.format_exc()
    if sys.argv[2] != "-":
        with open(sys.argv[2], "w") as f:
            f.write(text)
    sys.stderr.write(text)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
"""
_BOOTSTRAP = Path(watchdog.__file__).read_text() + _BOOTSTRAP_MAIN
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL

# What JobProcess.status() returns (fray.v2.types.JobStatus has the same values).
RUNNING, SUCCEEDED, FAILED, KILLED = "running", "succeeded", "failed", "killed"

kill_session = watchdog.kill_session
_BY_VALUE_LOCK = threading.Lock()


def bootstrap_args(
    payload: str, error_file: str = "-", launcher_pid: int = 0, cleanup_dir: str = "-"
) -> list[str]:
    """The arguments after ``python`` that run a dumped entrypoint (see ``_BOOTSTRAP``).

    ``payload`` is the payload file, or ``module:NAME`` for ``entrypoint.pkl`` inside the
    importable package NAME.
    """
    return ["-c", _BOOTSTRAP, payload, error_file, str(launcher_pid), cleanup_dir]


def dump_call(fn: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> bytes:
    """Cloudpickle ``(fn, args, kwargs)``: what the bootstrap loads and calls. ``run_command``
    goes by value, so a binary job runs where fray is not installed (a Ray node)."""
    call = (fn, tuple(args), dict(kwargs or {}))
    if fn is not run_command:
        return cloudpickle.dumps(call)
    module = sys.modules[__name__]
    with _BY_VALUE_LOCK:
        cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(call)
        finally:
            cloudpickle.unregister_pickle_by_value(module)


def command_payload(argv: Sequence[str]) -> bytes:
    """The payload that runs ``argv`` (``run_command(argv)``)."""
    return dump_call(run_command, (list(argv),))


def find_program(program: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The path ``program`` runs from, searched on ``env``'s PATH (default: ours) unless it
    names a path (relative to ``cwd``); FileNotFoundError / PermissionError saying why not."""
    if not program:
        raise FileNotFoundError("the command is empty")
    if "/" in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no program {program!r}: no such file")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(f"{program!r} is not an executable file")
        return path
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = shutil.which(program, path=search)
    if found is None:
        raise FileNotFoundError(f"no program {program!r} on PATH ({search})")
    return found


def run_command(argv: Sequence[str]) -> NoReturn:
    """Run ``argv`` as a child and exit as it did: what a binary job runs.

    The child stays in this process's session, in a process group of its own: SIGTERM and
    SIGINT sent to this process (or to its group, which is all that stopping a job process
    signals) are passed to the child's group once. When the child ends, so does this process:
    with the child's exit status, or, if a signal N killed the child, by the same signal
    (so a parent sees "killed by signal N"; should that not end it, it exits with 128+N, the
    shell's convention). A program that cannot be found or run raises FileNotFoundError or
    PermissionError naming it, before anything starts. ``str``/``bytes`` argv is a TypeError.
    """
    if isinstance(argv, str | bytes):
        raise TypeError(f"run_command takes a sequence of arguments, not {type(argv).__name__}")
    argv = [str(arg) for arg in argv]
    if not argv:
        raise ValueError("run_command needs a program to run")
    find_program(argv[0])  # a clear error rather than Popen's
    child = subprocess.Popen(argv, process_group=0)

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL, SIGSTOP cannot be set
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(0.5)  # the signal arrives; if it does not end us:
        os._exit(128 - code)
    raise SystemExit(code)


class JobProcess:
    """One process of a job: ``python -c BOOTSTRAP`` with its output in ``workdir/output.log``.

    ``payload`` is the cloudpickled ``(fn, args, kwargs)`` (:func:`dump_call`,
    :func:`command_payload`). ``cwd`` is the process's working directory; ``env`` its whole
    environment (to which ``PYTHONUNBUFFERED=1`` is added, so output reaches the log as it is
    printed). The process leads a session of its own, so :meth:`stop` reaches everything it
    started. If the launching process dies first, the job deletes ``cleanup_dir`` (default
    ``workdir``), kills its session and exits. Starting raises what ``Popen`` raises (e.g. a
    missing ``cwd``).
    """

    def __init__(
        self,
        payload: bytes,
        workdir: str,
        env: Mapping[str, str],
        cwd: str | None = None,
        cleanup_dir: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "output.log"
        self._error_path = self.workdir / "error.txt"
        payload_path = self.workdir / "entrypoint.pkl"
        payload_path.write_bytes(payload)
        self._stopped = False
        self._lock = threading.Lock()
        with open(self.log_path, "wb") as log:
            self._proc = start_python(
                *bootstrap_args(
                    str(payload_path),
                    str(self._error_path),
                    os.getpid(),
                    cleanup_dir or str(self.workdir),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
                new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it ended (``-N``: killed by signal N); else ``None``."""
        return self._proc.poll()

    def status(self) -> str:
        """``RUNNING`` while the process lives, then how it ended (``KILLED`` if stopped)."""
        code = self._proc.poll()
        if code is None:
            return RUNNING
        if self._stopped:
            return KILLED
        return SUCCEEDED if code == 0 else FAILED

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; True if it has."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def error(self) -> str | None:
        """The traceback of a failed process (or how it ended); else ``None``."""
        if self.status() != FAILED:
            return None
        try:
            text = self._error_path.read_text()
        except FileNotFoundError:
            text = ""
        return text or exit_description(self._proc.returncode)

    def read_log(self, offset: int, limit: int = -1) -> bytes:
        """The log's bytes from ``offset`` on (at most ``limit`` of them, unless -1)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group), without waiting; it is ``KILLED``
        from now on."""
        with self._lock:
            if self._stopped or self._proc.poll() is not None:
                return  # once is enough (a command gets it passed on once)
            self._stopped = True
            _killpg(self._proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL everything of its session still alive (itself, or what it left behind)."""
        if self._proc.poll() is None:
            _killpg(self._proc.pid, signal.SIGKILL)
        for _ in range(3):  # again, for children forked meanwhile
            if not kill_session(self._proc.pid):
                break

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM its group, SIGKILL its session after ``grace`` seconds (or once it ended,
        for what it left behind); then reap it."""
        self.terminate()
        if not self.wait(grace):
            self.kill()
        self._proc.wait()
        self.kill()


def exit_description(code: int | None) -> str:
    """How a process ended, for people: ``the job's process exited with code N`` / ``was
    killed by signal N``."""
    if code is not None and code < 0:
        return f"the job's process was killed by signal {-code}"
    return f"the job's process exited with code {code}"


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
