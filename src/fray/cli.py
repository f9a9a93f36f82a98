"""The `fray` command line: controller, worker, status and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fray.common.sizes import parse_bytes

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

DEFAULT_CONTROLLER = "http://127.0.0.1:8265"


def parse_resources(text: str) -> dict[str, str]:
    """'cpus=4,memory=8GiB,zone=us-east' -> a dict; cpus and memory are checked (memory as
    :func:`fray.common.sizes.parse_bytes` reads sizes: units are powers of 1024)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"resources need key=value, got {item!r}")
        out[key.strip()] = value.strip()
    if "cpus" in out:
        try:
            cpus = float(out["cpus"])
        except ValueError:
            cpus = float("nan")
        if not 0 <= cpus < float("inf"):
            raise argparse.ArgumentTypeError(f"cpus must be a number >= 0, got {out['cpus']!r}")
    if "memory" in out:
        try:
            parse_bytes(out["memory"])
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"memory: {exc}") from None
    return out


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
    except (ValueError, OSError) as exc:
        print(f"fray controller: {exc}", file=sys.stderr)
        return 2
    print(f"{READY_PREFIX}{server.address}", flush=True)
    logging.getLogger("fray.controller").info(
        "controller %s: state %s", server.service.controller_id, state
    )
    server.run()
    return 1 if server.failed is not None else 0


def _talking_to_controller(command: str, run: Callable[[], int]) -> int:
    """``run()``; exit code 1, with the reason on stderr, when the controller cannot be
    reached or refuses."""
    from connectrpc.errors import ConnectError

    from fray.errors import ControllerUnavailableError

    try:
        return run()
    except ControllerUnavailableError as exc:
        print(f"fray {command}: {exc}", file=sys.stderr)
    except ConnectError as exc:
        said = f"the controller said {exc.code.name}: {exc.message}"
        print(f"fray {command}: {said}", file=sys.stderr)
    return 1


def _worker(args: argparse.Namespace) -> int:
    from fray.wire.pb import controller_pb2 as pb
    from fray.worker.worker import Worker

    resources = dict(args.resources or {})
    cpus = float(resources.pop("cpus", args.concurrency or os.cpu_count() or 1))
    memory = parse_bytes(resources.pop("memory")) if "memory" in resources else 0
    try:
        worker = Worker(
            args.controller,
            concurrency=args.concurrency,
            prefetch=args.prefetch,
            resources=pb.Resources(cpus=cpus, memory_bytes=memory, labels=resources),
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
    except (ValueError, OSError) as exc:  # e.g. no token off loopback, a port in use
        print(f"fray worker: {exc}", file=sys.stderr)
        return 2
    return _talking_to_controller("worker", worker.run)


def _status(args: argparse.Namespace) -> int:
    from fray.wire.controller_client import ControllerClient

    try:
        client = ControllerClient(
            args.controller,
            token=args.token,
            tls_ca=args.tls_ca,
            retry_timeout=args.connect_timeout,
        )
    except ValueError as exc:  # e.g. an unreadable --tls-ca
        print(f"fray status: {exc}", file=sys.stderr)
        return 2
    try:
        return _talking_to_controller("status", lambda: _print_status(client))
    finally:
        client.close()


def _print_status(client: ControllerClient) -> int:
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import Message

    from fray.wire.pb import controller_pb2 as pb

    summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    workers = client.call(client.rpc.list_workers, pb.ListWorkersRequest())
    actors = client.call(client.rpc.list_actors, pb.ListActorsRequest())

    def as_dict(message: Message) -> dict[str, Any]:
        return MessageToDict(message, always_print_fields_with_no_presence=True)

    status = {
        "summary": as_dict(summary),
        "workers": as_dict(workers)["workers"],
        "actors": as_dict(actors)["actors"],
    }
    print(json.dumps(status, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fray.demo import main as demo_main

    return demo_main(workers=args.workers, tasks=args.tasks)


def _add_tls_server_args(p: argparse.ArgumentParser, what: str) -> None:
    """--tls-cert/--tls-key: serve HTTPS (both or neither; see fray.wire.tls)."""
    p.add_argument(
        "--tls-cert",
        default=os.environ.get("FRAY_TLS_CERT") or None,
        help=f"PEM certificate (chain) {what} serves HTTPS with; needs --tls-key "
        "(default: $FRAY_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        default=os.environ.get("FRAY_TLS_KEY") or None,
        help="PEM private key of --tls-cert (default: $FRAY_TLS_KEY)",
    )


def _add_tls_ca_arg(p: argparse.ArgumentParser) -> None:
    """--tls-ca: the CA bundle that verifies https:// servers."""
    p.add_argument(
        "--tls-ca",
        default=None,
        help="PEM CA bundle that verifies an https:// controller (default: $FRAY_TLS_CA, "
        "else the system store)",
    )


def request_size(text: str) -> int:
    """A --max-request-bytes value: a size as `parse_bytes` reads it (``512MiB``, ``1g``), from
    1 byte to the protobuf limit of 2 GiB - 1."""
    from fray.wire.limits import MAX_MESSAGE_BYTES

    try:
        size = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= size <= MAX_MESSAGE_BYTES:
        raise argparse.ArgumentTypeError(f"must be from 1 byte to {MAX_MESSAGE_BYTES} bytes")
    return size


def _add_limit_args(p: argparse.ArgumentParser, *, per_client: bool) -> None:
    """--max-request-bytes (and, for the controller, --max-queued-tasks-per-client)."""
    from fray.wire import limits

    p.add_argument(
        "--max-request-bytes",
        type=request_size,
        default=limits.DEFAULT_MAX_REQUEST_BYTES,
        metavar="SIZE",
        help="largest request accepted, e.g. 512MiB (default 1GiB; at most 2GiB-1); larger "
        "ones are refused with resource_exhausted (HTTP 429)",
    )
    if per_client:
        p.add_argument(
            "--max-queued-tasks-per-client",
            type=int,
            default=limits.DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT,
            metavar="N",
            help="unfinished queued tasks one client may have; more are refused with "
            f"resource_exhausted (default {limits.DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fray", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("FRAY_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("controller", help="run the controller (task queue and worker registry)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; anything else needs a token)",
    )
    p.add_argument("--port", type=int, default=8265, help="port (0: any free port)")
    p.add_argument("--token", help="require this bearer token (default: $FRAY_TOKEN)")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=10.0,
        help="seconds of silence after which a worker is declared dead",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
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
        type=int,
        default=100_000,
        help="finished tasks kept for GetTask/ListTasks (in memory and in --state); the oldest "
        "are forgotten beyond this",
    )
    _add_limit_args(p, per_client=True)
    _add_tls_server_args(p, "the controller")
    p.set_defaults(func=_controller)

    p = sub.add_parser("worker", help="run a worker that executes tasks from a controller")
    p.add_argument(
        "--controller", default=os.environ.get("FRAY_CONTROLLER_ADDRESS", DEFAULT_CONTROLLER)
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="tasks run at once (default: number of CPUs)"
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="most tasks held beyond the running ones; the worker holds ~50 ms of work "
        "at its recent pace, up to this (default: 256)",
    )
    p.add_argument(
        "--resources",
        type=parse_resources,
        default=None,
        help="e.g. cpus=4,memory=8GiB,zone=us-east (other keys become labels)",
    )
    p.add_argument("--worker-id", default=None)
    p.add_argument("--token", default=None, help="bearer token (default: $FRAY_TOKEN)")
    p.add_argument(
        "--host",
        "--health-host",
        default="127.0.0.1",
        help="address the worker serves on: direct tasks from clients and GET /healthz "
        "(default: loopback; any other address needs a token)",
    )
    p.add_argument(
        "--port", "--health-port", type=int, default=0, help="its port (0: any free port)"
    )
    p.add_argument(
        "--advertise-host",
        default=None,
        help="host name clients should dial (default: --host; the machine's address when "
        "--host is 0.0.0.0 or ::)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish after SIGTERM",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to keep trying to reach the controller at startup (once registered, a "
        "worker waits for its controller indefinitely)",
    )
    _add_limit_args(p, per_client=False)
    _add_tls_server_args(p, "the worker (for clients' direct calls)")
    _add_tls_ca_arg(p)
    p.set_defaults(func=_worker)

    p = sub.add_parser("status", help="print the cluster summary, workers and actors as JSON")
    p.add_argument(
        "--controller", default=os.environ.get("FRAY_CONTROLLER_ADDRESS", DEFAULT_CONTROLLER)
    )
    p.add_argument("--token", default=None)
    p.add_argument("--connect-timeout", type=float, default=5.0)
    _add_tls_ca_arg(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("demo", help="run fray's main job end to end on a local cluster")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=200)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ["FRAY_LOG_LEVEL"] = args.log_level  # processes we start log alike
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
