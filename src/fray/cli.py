"""The `fray` command line: controller, worker, status and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DEFAULT_CONTROLLER = "http://127.0.0.1:8265"

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}


def parse_memory(text: str) -> int:
    number = text.rstrip("bBkKmMgGtTiI")
    unit = text[len(number) :].lower()
    if unit not in _MEMORY_UNITS:
        raise argparse.ArgumentTypeError(f"unknown memory unit in {text!r}")
    try:
        size = int(float(number) * _MEMORY_UNITS[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"bad memory size {text!r}") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"memory size must be >= 0, got {text!r}")
    return size


def parse_resources(text: str) -> dict[str, str]:
    """'cpus=4,memory=8GiB,zone=us-east' -> a dict; cpus and memory are checked."""
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
        parse_memory(out["memory"])
    return out


def _controller(args: argparse.Namespace) -> int:
    from fray.controller.service import ControllerServer
    from fray.local_cluster import READY_PREFIX

    try:
        server = ControllerServer(
            args.host,
            args.port,
            token=args.token or os.environ.get("FRAY_TOKEN") or None,
            heartbeat_timeout=args.heartbeat_timeout,
            max_infra_attempts=args.max_attempts,
        )
    except (ValueError, OSError) as exc:
        print(f"fray controller: {exc}", file=sys.stderr)
        return 2
    print(f"{READY_PREFIX}{server.address}", flush=True)
    server.run()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from connectrpc.errors import ConnectError

    from fray.errors import ControllerUnavailableError
    from fray.wire.pb import controller_pb2 as pb
    from fray.worker.worker import Worker

    resources = dict(args.resources or {})
    cpus = float(resources.pop("cpus", args.concurrency or os.cpu_count() or 1))
    memory = parse_memory(resources.pop("memory")) if "memory" in resources else 0
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
    )
    try:
        return worker.run()
    except ControllerUnavailableError as exc:
        print(f"fray worker: {exc}", file=sys.stderr)
        return 1
    except ConnectError as exc:
        print(f"fray worker: the controller said {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    from connectrpc.errors import ConnectError
    from google.protobuf.json_format import MessageToDict

    from fray.errors import ControllerUnavailableError
    from fray.wire.controller_client import ControllerClient
    from fray.wire.pb import controller_pb2 as pb

    client = ControllerClient(args.controller, token=args.token, retry_timeout=args.connect_timeout)
    try:
        summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        workers = client.call(client.rpc.list_workers, pb.ListWorkersRequest())
        actors = client.call(client.rpc.list_actors, pb.ListActorsRequest())
    except ControllerUnavailableError as exc:
        print(f"fray status: {exc}", file=sys.stderr)
        return 1
    except ConnectError as exc:
        print(f"fray status: the controller said {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(
        json.dumps(
            {
                "summary": MessageToDict(summary, always_print_fields_with_no_presence=True),
                "workers": MessageToDict(workers, always_print_fields_with_no_presence=True)[
                    "workers"
                ],
                "actors": MessageToDict(actors, always_print_fields_with_no_presence=True)[
                    "actors"
                ],
            },
            indent=2,
        )
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fray.demo import main as demo_main

    return demo_main(workers=args.workers, tasks=args.tasks)


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
    p.set_defaults(func=_worker)

    p = sub.add_parser("status", help="print the cluster summary, workers and actors as JSON")
    p.add_argument(
        "--controller", default=os.environ.get("FRAY_CONTROLLER_ADDRESS", DEFAULT_CONTROLLER)
    )
    p.add_argument("--token", default=None)
    p.add_argument("--connect-timeout", type=float, default=5.0)
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
