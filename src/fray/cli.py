"""The `fray` command line: controller, worker, status, tasks, logs, job and demo."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from fray.cli_args import (
    LOG_LEVELS,
    RESOURCES_SYNTAX,
    HelpFormatter,
    add_client_args,
    add_controller_arg,
    add_limit_args,
    add_tls_ca_arg,
    add_tls_server_args,
    at_least,
    log_level,
    parse_resources,
    port_number,
    seconds,
    worker_resources,
)
from fray.cli_client import talking_to_controller, with_client
from fray.cli_job import add_job_command
from fray.cli_status import TASK_STATES
from fray.common.net import (
    DEFAULT_CONTROLLER_ADDRESS,
    DEFAULT_CONTROLLER_PORT,
)

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

DEFAULT_CONTROLLER = DEFAULT_CONTROLLER_ADDRESS


def _in_use(what: str, host: str, port: int, exc: OSError) -> str:
    """The message for a server that could not start; names the port when it is taken."""
    if exc.errno == errno.EADDRINUSE:
        return f"fray {what}: port {port} on {host} is in use; choose another with --port"
    return f"fray {what}: {exc}"


def default_state_path(port: int) -> str:
    """Where `fray controller --port PORT` keeps its state unless told (--state): one file per
    port under the user's state directory ($XDG_STATE_HOME, else ~/.local/state), so that a
    controller restarted on its port finds its state. Port 0 (any free port: nothing could find
    that controller again) is in memory."""
    if port == 0:
        return ":memory:"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "fray", f"controller-{port}.db")


def _controller(args: argparse.Namespace) -> int:
    from fray.controller.server import ControllerServer
    from fray.local_cluster import READY_PREFIX

    state = args.state if args.state is not None else default_state_path(args.port)
    try:
        server = ControllerServer(
            args.host,
            args.port,
            token=args.token or os.environ.get("FRAY_TOKEN") or None,
            heartbeat_timeout=args.heartbeat_timeout,
            max_infra_attempts=args.max_attempts,
            max_finished_tasks=args.max_finished_tasks,
            state_path=state,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_request_bytes=args.max_request_bytes,
            max_queued_tasks_per_client=args.max_queued_tasks_per_client,
        )
    except OSError as exc:  # a port in use, an unusable state file
        print(_in_use("controller", args.host, args.port, exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"fray controller: {exc}", file=sys.stderr)
        return 2
    print(f"{READY_PREFIX}{server.address}", flush=True)
    logging.getLogger("fray.controller").info(
        "controller %s: state %s", server.service.controller_id, state
    )
    server.run()
    return 1 if server.failed is not None else 0


def _worker(args: argparse.Namespace) -> int:
    from fray.worker.worker import Worker

    try:
        worker = Worker(
            args.controller or DEFAULT_CONTROLLER,
            concurrency=args.concurrency,
            prefetch=args.prefetch,
            # None: the worker offers the machine's cpus and memory
            resources=worker_resources(args.resources) if args.resources else None,
            worker_id=args.worker_id or "",
            token=args.token,
            host=args.host,
            port=args.port,
            advertise_host=args.advertise_host,
            shutdown_grace=args.shutdown_grace,
            retry_timeout=args.connect_timeout,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            max_request_bytes=args.max_request_bytes,
        )
    except OSError as exc:  # e.g. a port in use
        print(_in_use("worker", args.host, args.port, exc), file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. no token off loopback
        print(f"fray worker: {exc}", file=sys.stderr)
        return 2
    return talking_to_controller("worker", worker.run)


def _status(args: argparse.Namespace) -> int:
    from fray.cli_status import status_json, status_text

    def show(client: ControllerClient) -> int:
        if args.json:
            print(json.dumps(status_json(client), indent=2))
        else:
            print(status_text(client))
        return 0

    return with_client("status", args, show)


def _tasks(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from fray.cli_status import tasks_text
    from fray.wire.pb import controller_pb2 as pb

    def show(client: ControllerClient) -> int:
        state = f"TASK_STATE_{args.state}" if args.state else None
        request = pb.ListTasksRequest(state=state, limit=args.limit)
        answer = client.call(client.rpc.list_tasks, request)
        if args.json:
            print(json.dumps(MessageToDict(answer)["tasks"] if answer.tasks else [], indent=2))
        else:
            print(tasks_text(answer.tasks))
        return 0

    return with_client("tasks", args, show)


def _logs(args: argparse.Namespace) -> int:
    from fray.client.task_logs import print_task_logs
    from fray.wire.controller_client import ControllerClient

    try:
        client = ControllerClient(
            args.controller,
            token=args.token,
            tls_ca=args.tls_ca,
            retry_timeout=args.connect_timeout,
        )
    except ValueError as exc:
        print(f"fray logs: {exc}", file=sys.stderr)
        return 2
    try:
        return talking_to_controller(
            "logs", lambda: print_task_logs(client, args.task_id, sys.stdout, follow=args.follow)
        )
    finally:
        client.close()


def _demo(args: argparse.Namespace) -> int:
    from fray.demo import main as demo_main

    return demo_main(workers=args.workers, tasks=args.tasks)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog="fray", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fray {version('fray')}")
    log_help = (
        f"logging level, one of {', '.join(LOG_LEVELS)} (default: $FRAY_LOG_LEVEL, else INFO)"
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=os.environ.get("FRAY_LOG_LEVEL") or "INFO",
        help=log_help,
    )
    # Also after the subcommand (`fray worker --log-level debug`); SUPPRESS keeps the above.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=log_level, default=argparse.SUPPRESS, help=log_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=text, description=text, parents=[common], formatter_class=HelpFormatter
        )

    p = add_command("controller", "run the controller (task queue and worker registry)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; anything else needs a token)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_CONTROLLER_PORT,
        help="port (0: any free port)",
    )
    p.add_argument("--token", help="require this bearer token (default: $FRAY_TOKEN)")
    p.add_argument(
        "--heartbeat-timeout",
        type=seconds,
        default=10.0,
        help="seconds of silence after which a worker is declared dead",
    )
    p.add_argument(
        "--max-attempts",
        type=at_least(1),
        default=3,
        help="tries per task when workers die (infrastructure failures)",
    )
    p.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="SQLite file holding the controller's state, which survives restarts; ':memory:' "
        "for none (default: $XDG_STATE_HOME/fray/controller-PORT.db, XDG_STATE_HOME defaulting "
        "to ~/.local/state; in memory with --port 0)",
    )
    p.add_argument(
        "--max-finished-tasks",
        type=at_least(1),
        default=100_000,
        help="finished tasks kept for GetTask/ListTasks (in memory and in --state); the oldest "
        "are forgotten beyond this",
    )
    add_limit_args(p, per_client=True)
    add_tls_server_args(p, "the controller")
    p.set_defaults(func=_controller)

    p = add_command("worker", "run a worker that executes tasks from a controller")
    add_controller_arg(p)
    p.add_argument(
        "--concurrency",
        type=at_least(1),
        default=None,
        help="tasks run at once (default: number of CPUs)",
    )
    p.add_argument(
        "--prefetch",
        type=at_least(0),
        default=None,
        help="most tasks held beyond the running ones; the worker holds ~50 ms of work "
        "at its recent pace, up to this (default: 256)",
    )
    p.add_argument(
        "--resources",
        type=parse_resources,
        default=None,
        metavar="KEY=VALUE,...",
        help="what this worker offers to tasks, actors and job replicas, e.g. "
        "cpus=8,memory=32GiB,gpus=2,gpu_type=H100,zone=us-east1: "
        f"{RESOURCES_SYNTAX}. Work that asks for amounts holds them here while it runs; "
        "labels must match what it asks. cpus defaults to the machine's CPU count and memory "
        "to its physical memory; slots (--concurrency) are separate",
    )
    p.add_argument("--worker-id", default=None, help="its id (default: a random one)")
    p.add_argument("--token", default=None, help="bearer token (default: $FRAY_TOKEN)")
    p.add_argument(
        "--host",
        "--health-host",
        default="127.0.0.1",
        help="address the worker serves on: direct tasks from clients and GET /healthz "
        "(default: loopback; any other address needs a token)",
    )
    p.add_argument(
        "--port",
        "--health-port",
        type=port_number,
        default=0,
        help="its port (default 0: any free port)",
    )
    p.add_argument(
        "--advertise-host",
        default=None,
        help="host name clients should dial (default: --host; the machine's address when "
        "--host is 0.0.0.0 or ::)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=seconds,
        default=30.0,
        help="seconds running tasks get to finish after SIGTERM",
    )
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=60.0,
        help="seconds to keep trying to reach the controller at startup (once registered, a "
        "worker waits for its controller indefinitely)",
    )
    add_limit_args(p, per_client=False)
    add_tls_server_args(p, "the worker (for clients' direct calls)")
    add_tls_ca_arg(p)
    p.set_defaults(func=_worker)

    p = add_command(
        "status",
        "print a summary of the cluster: workers (slots used/total, free/total resources, "
        "labels, heartbeat age), work waiting for resources no worker offers, queue depth, "
        "tasks by state, live actors, jobs (by state; the running and pending ones)",
    )
    add_client_args(p)
    p.add_argument(
        "--json", action="store_true", help="print the summary, workers and actors as JSON"
    )
    p.set_defaults(func=_status)

    p = add_command(
        "tasks",
        "list tasks: id, name, state, worker, attempts, age (oldest first), what each needs of "
        "its worker and, when no worker could run it, why it waits",
    )
    add_client_args(p)
    p.add_argument(
        "--state",
        type=str.upper,
        choices=TASK_STATES,
        default=None,
        help="only tasks in this state (any case)",
    )
    p.add_argument("--limit", type=at_least(1), default=100, help="at most this many")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_tasks)

    p = add_command("logs", "print what a task printed (stdout, stderr, logging)")
    p.add_argument("task_id")
    p.add_argument(
        "--follow", "-f", action="store_true", help="print its output as it comes, until it ends"
    )
    p.add_argument(
        "--controller", default=os.environ.get("FRAY_CONTROLLER_ADDRESS", DEFAULT_CONTROLLER)
    )
    p.add_argument("--token", default=None)
    p.add_argument("--connect-timeout", type=float, default=5.0)
    add_tls_ca_arg(p)
    p.set_defaults(func=_logs)

    add_job_command(add_command, [common])

    p = add_command("demo", "run fray's main job end to end on a local cluster")
    p.add_argument("--workers", type=at_least(0), default=2, help="workers to start")
    p.add_argument("--tasks", type=at_least(1), default=200, help="Monte-Carlo tasks to run")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    os.environ["FRAY_LOG_LEVEL"] = args.log_level  # processes we start log alike
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:  # `fray status | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
