"""`fray job submit|list|status|logs|stop`: command-line jobs on a fray controller, like
`ray job ...`, over the controller's job RPCs (SubmitJob, ListJobs, GetJob, GetJobLogs, StopJob;
curl-able like every fray RPC).

A job is `--replicas` processes of one command line, each started on a worker whose free
resources and labels fit `--resources`, all at once. Its output (stdout and stderr, per
replica) is kept by the controller while it runs and after; `--wait` and `--follow` stream it
with long polls, one thread per replica (up to 32; beyond, each thread takes turns over several
replicas).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from fray.cli_args import (
    HelpFormatter,
    ResourceArgs,
    add_client_args,
    at_least,
    env_pair,
    job_name,
    parse_resources,
    requirements,
)
from fray.cli_client import with_client
from fray.cli_status import JOB_STATES, job_state, job_text, jobs_text
from fray.wire.limits import MAX_ID_LENGTH
from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_KILLED", "EXIT_SUCCEEDED", "add_job_command"]

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_KILLED = 2
EXIT_INTERRUPTED = 130  # Ctrl-C while following: the job itself keeps running
MAX_REPLICAS = 1000
_T = TypeVar("_T")
_FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED)
_WAIT_MS = 10_000  # one long poll
_PENDING_WAIT_MS = 2_000  # a long poll on a pending job (its reason is shown as it changes)
_SHARED_WAIT_MS = 500  # a long poll of a thread that takes turns over several replicas
_MAX_FOLLOWERS = 32  # threads following replicas' output
_FOLLOW_RETRY = 60.0  # seconds a follower keeps trying an unreachable controller
_DRAIN_SECONDS = 15.0  # after the job ended, how long its last output may take to arrive

_SUBMIT_EPILOG = f"""\
--resources KEY=VALUE,...: numbers are amounts (cpus=2, gpus=1; memory and disk are
sizes in bytes such as 8GiB or 512m, powers of 1024), any other value is a label
(gpu_type=H100, tpu=v5litepod-4, zone=us-east1). Each replica holds the amounts on its
worker while it runs; labels must match the worker's (a value "a|b" accepts either).

Each replica gets FRAY_JOB_ID, FRAY_TASK_INDEX (0..N-1), FRAY_NUM_TASKS (N),
FRAY_CONTROLLER_ADDRESS and FRAY_CLUSTER_SPEC in its environment, besides --env.

exit status with --wait:
  {EXIT_SUCCEEDED}    the job succeeded (every replica exited with status 0)
  {EXIT_FAILED}    it failed (a replica exited non-zero, could not start or was lost):
       the error is printed on stderr
  {EXIT_KILLED}    it was stopped (`fray job stop`)
  {EXIT_INTERRUPTED}  Ctrl-C: fray stopped following; the job keeps running
Without --wait, 0 once the job is submitted. 1 also means the controller could not be
reached or refused the job, 2 bad arguments (both said on stderr).

examples:
  fray job submit -- python -c "print('hi')"
  fray job submit --name train --replicas 2 --resources gpus=1,gpu_type=H100 --wait -- \\
      python train.py --epochs 3
"""


class _Printer:
    """Writes replicas' output to `out`: a lone replica's bytes as they come; several
    replicas' as whole lines prefixed ``[JOB_ID/INDEX] ``."""

    def __init__(self, out: BinaryIO, job_id: str, prefixed: bool) -> None:
        self.out = out
        self.job_id = job_id
        self.prefixed = prefixed
        self.partial: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.broken = False  # the reader went away (`| head`)

    def _emit(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            self.broken = True

    def write(self, index: int, data: bytes) -> None:
        with self.lock:
            if not self.prefixed:
                self._emit(data)
                return
            lines = (self.partial.pop(index, b"") + data).split(b"\n")
            if lines[-1]:
                self.partial[index] = lines[-1]
            prefix = f"[{self.job_id}/{index}] ".encode()
            self._emit(b"".join(prefix + line + b"\n" for line in lines[:-1]))

    def end(self, index: int) -> None:
        """The replica's output is complete: its unfinished last line goes out."""
        with self.lock:
            rest = self.partial.pop(index, b"")
            if rest:
                self._emit(f"[{self.job_id}/{index}] ".encode() + rest + b"\n")

    def note(self, index: int, text: str) -> None:
        """A word from fray (dropped output) on stderr."""
        who = f"{self.job_id}/{index}" if self.prefixed else self.job_id
        print(f"fray job: [{who}] {text}", file=sys.stderr, flush=True)


def _read_logs(
    client: ControllerClient,
    job_id: str,
    indices: list[int],
    printer: _Printer,
    *,
    follow: bool,
    stop: threading.Event,
) -> None:
    """Print the output of replicas `indices` from their first byte: what there is now, or
    (`follow`) until each has ended. Takes turns over the replicas when there are several."""
    offsets = dict.fromkeys(indices, 0)
    wait_ms = 0 if not follow else _WAIT_MS if len(indices) == 1 else _SHARED_WAIT_MS
    while offsets and not stop.is_set() and not printer.broken:
        for index in list(offsets):
            request = pb.GetJobLogsRequest(
                job_id=job_id, replica=index, offset=offsets[index], wait_ms=wait_ms
            )
            answer = client.call(
                client.rpc.get_job_logs, request, wait_ms=wait_ms, retry_timeout=_FOLLOW_RETRY
            )
            if answer.dropped_bytes:
                printer.note(index, f"{answer.dropped_bytes} earlier bytes of output were dropped")
            if answer.data:
                printer.write(index, answer.data)
            offsets[index] = max(answer.next_offset, offsets[index] + len(answer.data))
            if answer.finished or (not follow and not answer.data):
                del offsets[index]
                printer.end(index)


class _Followers:
    """Threads following every replica's output until each has ended (daemons: Ctrl-C or the
    end of `fray` leaves them behind)."""

    def __init__(self, client: ControllerClient, job_id: str, replicas: int, printer: _Printer):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = []
        count = min(max(replicas, 1), _MAX_FOLLOWERS)
        for first in range(count):
            indices = list(range(first, max(replicas, 1), count))
            thread = threading.Thread(
                target=self._run,
                args=(client, job_id, indices, printer),
                name=f"fray-job-logs-{first}",
                daemon=True,
            )
            self.threads.append(thread)
        for thread in self.threads:
            thread.start()

    def _run(
        self, client: ControllerClient, job_id: str, indices: list[int], printer: _Printer
    ) -> None:
        try:
            _read_logs(client, job_id, indices, printer, follow=True, stop=self.stop)
        except Exception as exc:  # shown by the main thread (unless it is stopping)
            if not self.stop.is_set():
                self.errors.append(exc)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, seconds: float) -> bool:
        """Wait up to `seconds` for every follower to end; whether they all did."""
        deadline = time.monotonic() + seconds
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.alive()

    def raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]


def _out() -> BinaryIO:
    return sys.stdout.buffer


def _interrupted(job_id: str) -> int:
    print(
        f"\nfray job: stopped following {job_id}; the job keeps running "
        f"(stop it with `fray job stop {job_id}`)",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_INTERRUPTED


def _get_job(client: ControllerClient, job_id: str, wait_ms: int = 0) -> pb.Job:
    request = pb.GetJobRequest(job_id=job_id, wait_ms=wait_ms)
    retry = _FOLLOW_RETRY if wait_ms else None
    return client.call(client.rpc.get_job, request, wait_ms=wait_ms, retry_timeout=retry).job


def _wait_for_end(client: ControllerClient, job: pb.Job, followers: _Followers) -> pb.Job:
    """Long-poll the job until it is final, saying (on stderr) why it waits when it cannot be
    placed."""
    said = ""
    while job.state not in _FINAL:
        if job.pending_reason and job.pending_reason != said:
            said = job.pending_reason
            print(f"fray job: {job.job_id} is waiting: {said}", file=sys.stderr, flush=True)
        followers.raise_errors()
        # A pending job's reason may come and go: look again sooner than at its end.
        wait_ms = _PENDING_WAIT_MS if job.state == pb.JOB_STATE_PENDING else _WAIT_MS
        job = _get_job(client, job.job_id, wait_ms)
    return job


def _ended(job: pb.Job) -> int:
    """The exit status for a final job; a failure's error goes to stderr."""
    if job.state == pb.JOB_STATE_SUCCEEDED:
        return EXIT_SUCCEEDED
    if job.state == pb.JOB_STATE_KILLED:
        print(f"fray job: {job.job_id} was stopped (KILLED)", file=sys.stderr)
        return EXIT_KILLED
    error = job.error.rstrip("\n") or "(no error reported)"
    joiner = "\n" if "\n" in error else " "
    print(f"fray job: {job.job_id} failed:{joiner}{error}", file=sys.stderr)
    return EXIT_FAILED


def _interruptibly(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a daemon thread, waited for so that Ctrl-C interrupts at once: a call to the
    controller blocks in native code, where Python sees signals only when it returns (up to a
    long poll later)."""
    box: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="fray-job-call", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)  # a signal interrupts this wait
    if errors:
        raise errors[0]
    return box[0]


def _follow_to_end(client: ControllerClient, job: pb.Job) -> int:
    """`--wait`: stream every replica's output until the job ends; its exit status."""
    printer = _Printer(_out(), job.job_id, prefixed=job.replicas > 1)
    followers = _Followers(client, job.job_id, job.replicas, printer)
    try:
        job = _interruptibly(lambda: _wait_for_end(client, job, followers))
        if not followers.join(_DRAIN_SECONDS):
            print(f"fray job: some of {job.job_id}'s output is missing", file=sys.stderr)
        followers.raise_errors()
    except KeyboardInterrupt:
        followers.stop.set()
        return _interrupted(job.job_id)
    if printer.broken:
        raise BrokenPipeError
    return _ended(job)


def _not_found(action: str, job_id: str, client: ControllerClient) -> Callable[[], int]:
    def say() -> int:
        print(f"fray job {action}: no job {job_id!r} at {client.address}", file=sys.stderr)
        return 1

    return say


def _run(action: str, args: argparse.Namespace, use: Callable[[ControllerClient], int]) -> int:
    """`use(client)`; a job the controller does not know is a one-line error (exit 1)."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    def guarded(client: ControllerClient) -> int:
        try:
            return use(client)
        except ConnectError as exc:
            job_id = getattr(args, "job_id", None)
            if exc.code is Code.NOT_FOUND and job_id and action != "submit":
                print(f"fray job {action}: no job {job_id!r} at {client.address}", file=sys.stderr)
                return 1
            if exc.code is Code.UNIMPLEMENTED:
                print(
                    f"fray job {action}: the controller at {client.address} does not run jobs "
                    "(an older fray?)",
                    file=sys.stderr,
                )
                return 1
            raise

    return with_client(f"job {action}", args, guarded)


# ---------------------------------------------------------------------- the actions


def _default_name(command: list[str]) -> str:
    name = os.path.basename(command[0].rstrip("/")) if command else ""
    return (name.replace("/", "_") or "job")[:64]


def _owner() -> str:
    """Who submits: ``fray job (USER@HOST)``, the same for each submit of one user, so that
    submitting again with the same --job-id finds the job instead of clashing with it."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = str(os.getuid())
    return f"fray job ({user}@{socket.gethostname()})"[:MAX_ID_LENGTH]


def _submit(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    name = args.name or _default_name(command)
    resources: ResourceArgs | None = args.resources
    spec = pb.JobSpec(
        # Chosen here, so that a submit retried after a lost answer finds the same job.
        job_id=args.job_id or f"{name}-{secrets.token_hex(4)}",
        name=name,
        replicas=args.replicas,
        command=command,
        env=dict(args.env or []),
        working_dir=os.path.abspath(args.working_dir) if args.working_dir else "",
        owner=_owner(),
        requirements=requirements(resources) if resources else None,
    )

    def use(client: ControllerClient) -> int:
        job = client.call(client.rpc.submit_job, pb.SubmitJobRequest(job=spec)).job
        print(job.job_id, flush=True)
        if job.state == pb.JOB_STATE_PENDING:  # placed at submit, if it could be: why not
            job = _get_job(client, job.job_id)
        if not args.wait:
            if job.pending_reason:
                print(f"fray job: {job.job_id} is waiting: {job.pending_reason}", file=sys.stderr)
            return 0
        return _follow_to_end(client, job)

    return _run("submit", args, use)


def _list(args: argparse.Namespace) -> int:
    def use(client: ControllerClient) -> int:
        state = f"JOB_STATE_{args.state}" if args.state else None
        answer = client.call(client.rpc.list_jobs, pb.ListJobsRequest(state=state))
        if args.json:
            _print_json([_as_dict(j) for j in answer.jobs])
        else:
            print(jobs_text(answer.jobs))
        return 0

    return _run("list", args, use)


def _status(args: argparse.Namespace) -> int:
    def use(client: ControllerClient) -> int:
        job = _get_job(client, args.job_id)
        if args.json:
            _print_json(_as_dict(job))
        else:
            print(job_text(job))
        return 0

    return _run("status", args, use)


def _logs(args: argparse.Namespace) -> int:
    def use(client: ControllerClient) -> int:
        job = _get_job(client, args.job_id)
        replicas = max(job.replicas, 1)
        if args.replica is not None and args.replica >= replicas:
            print(
                f"fray job logs: {job.job_id} has {replicas} replica(s): "
                f"--replica must be 0-{replicas - 1}",
                file=sys.stderr,
            )
            return 1
        indices = [args.replica] if args.replica is not None else list(range(replicas))
        printer = _Printer(_out(), job.job_id, prefixed=len(indices) > 1)
        if not args.follow:
            _read_logs(client, job.job_id, indices, printer, follow=False, stop=threading.Event())
        else:
            try:
                _follow_replicas(client, job.job_id, indices, printer)
            except KeyboardInterrupt:
                return _interrupted(job.job_id)
        if printer.broken:
            raise BrokenPipeError
        return 0

    return _run("logs", args, use)


def _follow_replicas(
    client: ControllerClient, job_id: str, indices: list[int], printer: _Printer
) -> None:
    """`logs --follow`: until the replicas `indices` have ended."""
    if len(indices) == 1:
        stop = threading.Event()
        try:
            _interruptibly(
                lambda: _read_logs(client, job_id, indices, printer, follow=True, stop=stop)
            )
        finally:
            stop.set()
        return
    followers = _Followers(client, job_id, len(indices), printer)
    try:
        while not followers.join(0.5) and not printer.broken:
            followers.raise_errors()
        followers.raise_errors()
    finally:
        followers.stop.set()


def _stop(args: argparse.Namespace) -> int:
    def use(client: ControllerClient) -> int:
        job = client.call(client.rpc.stop_job, pb.StopJobRequest(job_id=args.job_id)).job
        if job.state == pb.JOB_STATE_KILLED:
            print(f"{job.job_id}: KILLED")
        else:
            print(f"{job.job_id} had already ended: {job_state(job.state)}")
        return 0

    return _run("stop", args, use)


def _as_dict(job: pb.Job) -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(job, always_print_fields_with_no_presence=True)


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=2))


# ---------------------------------------------------------------------- the parser


def add_job_command(
    add_command: Callable[[str, str], argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """`fray job ACTION ...` (`add_command(name, help)` makes the `job` subparser)."""
    job = add_command(
        "job",
        "run a command as a job on the cluster's workers, and list, inspect, follow or stop jobs",
    )
    actions = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")

    def action(
        name: str, text: str, epilog: str | None = None, usage: str | None = None
    ) -> argparse.ArgumentParser:
        p = actions.add_parser(
            name,
            help=text,
            description=text,
            epilog=epilog,
            usage=usage,
            parents=parents,
            formatter_class=HelpFormatter,
        )
        add_client_args(p)
        return p

    p = action(
        "submit",
        "start CMD as a job (--replicas processes, each on a worker that fits --resources, all "
        "at once) and print its id; with --wait, follow its output and exit with its status",
        _SUBMIT_EPILOG,
        usage="fray job submit [options] -- CMD [ARGS ...]",
    )
    p.add_argument("--name", type=job_name, default=None, help="a name for people (default: CMD)")
    p.add_argument(
        "--job-id",
        default=None,
        help="its id (default: NAME-8 hex digits); submitting again with the same id returns "
        "the job submitted first",
    )
    p.add_argument(
        "--resources",
        type=parse_resources,
        default=None,
        metavar="KEY=VALUE,...",
        help="what each replica needs of its worker, e.g. cpus=2,memory=8GiB,gpus=1,"
        "gpu_type=H100 (see below; default: nothing beyond a live worker)",
    )
    p.add_argument(
        "--replicas",
        type=_replicas,
        default=1,
        help=f"processes to start, all at once, each on a worker that fits (1-{MAX_REPLICAS})",
    )
    p.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="set in each replica's environment (repeat for more)",
    )
    p.add_argument(
        "--working-dir",
        default=None,
        metavar="DIR",
        help="the replicas' working directory on their worker, made absolute here (default: "
        "the worker's)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's output (lines prefixed [JOB/INDEX] when there are several "
        "replicas) and exit with its status (see below)",
    )
    p.add_argument(
        "cmd",
        nargs="+",
        metavar="CMD [ARGS ...]",
        help="the command line each replica runs (after `--`, so that its options are not "
        "taken for fray's)",
    )
    p.set_defaults(func=_submit)

    p = action(
        "list",
        "list the controller's jobs, oldest first: id, name, state, replicas, age, and where "
        "each runs, why it waits or how it failed",
    )
    p.add_argument(
        "--state",
        type=str.upper,
        choices=JOB_STATES,
        default=None,
        help="only jobs in this state (any case)",
    )
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_list)

    p = action("status", "show one job: state, command, needs, replicas, why it waits, its error")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=_status)

    p = action(
        "logs",
        "print what a job's replicas printed (stdout and stderr; lines prefixed [JOB/INDEX] "
        "when there are several)",
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "--replica", type=at_least(0), default=None, help="only this replica's (default: all)"
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing until the job's replicas have ended (Ctrl-C stops following, not "
        "the job)",
    )
    p.set_defaults(func=_logs)

    p = action("stop", "stop a job: its processes are killed and it ends KILLED")
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(func=_stop)


def _replicas(text: str) -> int:
    value = at_least(1)(text)
    if value > MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_REPLICAS}, got {value}")
    return value
