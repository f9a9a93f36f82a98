"""Connect (fray's RPC stack) against gRPC (grpcio), the same protobuf messages, one run.

Usage:
    .venv/bin/python scripts/bench_grpc.py [--calls 2000] [--batches 40] [--batch-size 1000]

Stacks (each server in a subprocess of its own, the client in this process, one at a time):
    connect        fray's stack: the generated FrayControllerASGIApplication (fray's
                   interceptors and codecs) served by fray.wire.serving.Server (uvicorn, uvloop,
                   httptools); the client is the generated FrayControllerClientSync on pyqwest,
                   configured as fray's ControllerClient (no compression either way)
    fray           what fray runs now: fray.wire.serving.PlainUnary answers the plain binary
                   case in front of the same connectrpc app, and the client is
                   fray.wire.plain_client.PlainService (HTTP/1.1 on a plain socket), as
                   fray's ControllerClient and worker clients use for http:// addresses
    grpc           grpcio 1.x: grpc.server with a generic handler over the same messages
                   (SerializeToString/FromString), a thread pool of 4; the client is
                   channel.unary_unary on an insecure channel

Workloads (the fray.v1.FrayController methods and messages, answered by a minimal service):
    unary         GetClusterSummary (empty request, small answer) --calls times one at a time,
                  after 10% warm-up; p50/p99 in ms and calls/s
    submit batch  SubmitTasks with --batch-size TaskSpecs (a cloudpickled function by value,
                  cloudpickled args, a uuid, a name, an owner, a cpus requirement), answered
                  with one id per task; p50 of --batches calls, and tasks/s at that p50
    lease batch   LeaseTasks answered by a LeaseTasksResponse of --batch-size LeasedTasks of the
                  same payloads; p50 of --batches calls, and tasks/s at that p50

Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

from fray.wire.pb import controller_pb2 as pb

SERVICE = "fray.v1.FrayController"
METHODS: dict[str, tuple[Any, Any]] = {  # method -> (request class, response class)
    "GetClusterSummary": (pb.GetClusterSummaryRequest, pb.GetClusterSummaryResponse),
    "SubmitTasks": (pb.SubmitTasksRequest, pb.SubmitTasksResponse),
    "LeaseTasks": (pb.LeaseTasksRequest, pb.LeaseTasksResponse),
}
MAX_BYTES = 2**31 - 1
STACKS = ("connect", "fray", "grpc")


# --- the messages ----------------------------------------------------------------------------


def _task_function(x: int) -> int:
    """What the batch's tasks would run (pickled by value, as a user's script function is)."""
    return x * x + 1


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def task_specs(n: int) -> list[pb.TaskSpec]:
    function = cloudpickle.dumps(_task_function)
    owner = uuid.uuid4().hex
    return [
        pb.TaskSpec(
            task_id=uuid.uuid4().hex,
            function=function,
            args=cloudpickle.dumps(((i,), {})),
            name="bench_grpc._task_function",
            owner=owner,
            requirements=pb.Requirements(resources={"cpus": 1.0}),
        )
        for i in range(n)
    ]


def lease_response(n: int) -> pb.LeaseTasksResponse:
    return pb.LeaseTasksResponse(
        tasks=[
            pb.LeasedTask(
                task_id=spec.task_id,
                attempt=1,
                name=spec.name,
                function=spec.function,
                args=spec.args,
            )
            for spec in task_specs(n)
        ]
    )


class Answers:
    """The minimal service's logic, shared by both servers (plain functions of the request)."""

    def __init__(self, batch_size: int) -> None:
        self.lease = lease_response(batch_size)
        self.summary = pb.GetClusterSummaryResponse(queue_depth=3)

    def get_cluster_summary(self, request: pb.GetClusterSummaryRequest) -> Any:
        return self.summary

    def submit_tasks(self, request: pb.SubmitTasksRequest) -> Any:
        return pb.SubmitTasksResponse(
            task_ids=[t.task_id for t in request.tasks], controller_id="bench"
        )

    def lease_tasks(self, request: pb.LeaseTasksRequest) -> Any:
        return self.lease


# --- servers (run in a subprocess: `bench_grpc.py --serve STACK`) ---------------------------


def serve_connect(answers: Answers, plain: bool) -> None:
    from connectrpc.compat import google_protobuf_binary_codec

    from fray.wire import serving
    from fray.wire.pb.controller_connect import FrayController, FrayControllerASGIApplication

    class Service(FrayController):  # its other methods answer UNIMPLEMENTED
        async def get_cluster_summary(self, request: Any, ctx: Any) -> Any:
            return answers.get_cluster_summary(request)

        async def submit_tasks(self, request: Any, ctx: Any) -> Any:
            return answers.submit_tasks(request)

        async def lease_tasks(self, request: Any, ctx: Any) -> Any:
            return answers.lease_tasks(request)

    service = Service()
    rpc = FrayControllerASGIApplication(
        service,
        interceptors=serving.interceptors(None, {}, "bench"),
        read_max_bytes=MAX_BYTES,
        codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
    )
    app: Any = rpc
    if plain:
        descriptor = pb.DESCRIPTOR.services_by_name["FrayController"]
        fast = serving.PlainUnary(service, descriptor, None, {}, "bench")
        app = serving.plain_first(fast, rpc)

    server = serving.Server(app, "127.0.0.1", 0, name="bench")
    print(f"PORT {server.port}", flush=True)
    server.run()


def serve_grpc(answers: Answers) -> None:
    import grpc

    handlers = {
        "GetClusterSummary": answers.get_cluster_summary,
        "SubmitTasks": answers.submit_tasks,
        "LeaseTasks": answers.lease_tasks,
    }
    rpc_handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            (lambda f: lambda request, context: f(request))(fn),
            request_deserializer=METHODS[name][0].FromString,
            response_serializer=METHODS[name][1].SerializeToString,
        )
        for name, fn in handlers.items()
    }
    options = [
        ("grpc.max_receive_message_length", MAX_BYTES),
        ("grpc.max_send_message_length", MAX_BYTES),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, rpc_handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


# --- clients ---------------------------------------------------------------------------------

Call = Callable[[Any], Any]


def connect_calls(port: int) -> tuple[dict[str, Call], Callable[[], None]]:
    from fray.wire.pb.controller_connect import FrayControllerClientSync

    client = FrayControllerClientSync(
        f"http://127.0.0.1:{port}",
        send_compression=None,
        accept_compression=(),
        timeout_ms=60_000,
        read_max_bytes=MAX_BYTES,
    )
    calls = {
        "GetClusterSummary": client.get_cluster_summary,
        "SubmitTasks": client.submit_tasks,
        "LeaseTasks": client.lease_tasks,
    }
    return calls, client.close


def plain_calls(port: int) -> tuple[dict[str, Call], Callable[[], None]]:
    from fray.wire.plain_client import PlainService

    client: Any = PlainService(
        f"http://127.0.0.1:{port}",
        pb.DESCRIPTOR.services_by_name["FrayController"],
        read_max_bytes=MAX_BYTES,
        default_timeout_ms=60_000,
    )
    calls = {
        "GetClusterSummary": client.get_cluster_summary,
        "SubmitTasks": client.submit_tasks,
        "LeaseTasks": client.lease_tasks,
    }
    return calls, client.close


def grpc_calls(port: int) -> tuple[dict[str, Call], Callable[[], None]]:
    import grpc

    options = [
        ("grpc.max_receive_message_length", MAX_BYTES),
        ("grpc.max_send_message_length", MAX_BYTES),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    calls = {
        name: channel.unary_unary(
            f"/{SERVICE}/{name}",
            request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString,
        )
        for name, (req, resp) in METHODS.items()
    }
    return calls, channel.close


def start_server(stack: str, batch_size: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack, "--batch-size", str(batch_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the {stack} server did not start (said {line!r})")
    return proc, int(line.split()[1])


def timed(call: Call, request: Any, n: int) -> list[float]:
    """Seconds per call, ``n`` calls one at a time."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call(request)
        out.append(time.perf_counter() - start)
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def measure(stack: str, args: argparse.Namespace) -> dict[str, float]:
    proc, port = start_server(stack, args.batch_size)
    try:
        make = {"grpc": grpc_calls, "fray": plain_calls}.get(stack, connect_calls)
        calls, close = make(port)
        try:
            summary = calls["GetClusterSummary"]
            empty = pb.GetClusterSummaryRequest()
            timed(summary, empty, max(1, args.calls // 10))
            start = time.perf_counter()
            unary = timed(summary, empty, args.calls)
            unary_wall = time.perf_counter() - start

            submit = pb.SubmitTasksRequest(tasks=task_specs(args.batch_size))
            reply = calls["SubmitTasks"](submit)
            assert len(reply.task_ids) == args.batch_size
            timed(calls["SubmitTasks"], submit, 3)
            submits = timed(calls["SubmitTasks"], submit, args.batches)

            lease = pb.LeaseTasksRequest(worker_id="bench", wait_ms=0)
            assert len(calls["LeaseTasks"](lease).tasks) == args.batch_size
            timed(calls["LeaseTasks"], lease, 3)
            leases = timed(calls["LeaseTasks"], lease, args.batches)
        finally:
            close()
    finally:
        proc.kill()
        proc.wait()
    return {
        "unary_p50": percentile(unary, 50) * 1e3,
        "unary_p99": percentile(unary, 99) * 1e3,
        "unary_rate": args.calls / unary_wall,
        "submit_p50": percentile(submits, 50) * 1e3,
        "submit_rate": args.batch_size / percentile(submits, 50),
        "lease_p50": percentile(leases, 50) * 1e3,
        "lease_rate": args.batch_size / percentile(leases, 50),
        "submit_bytes": submit.ByteSize(),
        "lease_bytes": lease_response(args.batch_size).ByteSize(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        answers = Answers(args.batch_size)
        if args.serve == "grpc":
            serve_grpc(answers)
        else:
            serve_connect(answers, plain=args.serve == "fray")
        return 0

    from importlib.metadata import version

    import grpc
    import uvicorn

    results: dict[str, dict[str, float]] = {}
    for stack in args.stacks.split(","):
        print(f"measuring {stack} ...", file=sys.stderr, flush=True)
        results[stack] = measure(stack, args)

    any_result = next(iter(results.values()))
    b = args.batch_size
    print(
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, connectrpc {version('connectrpc')}, "
        f"pyqwest {version('pyqwest')}, uvicorn {uvicorn.__version__}, "
        f"grpcio {grpc.__version__}"
    )
    print()
    print(
        f"| stack | unary p50 (ms) | unary p99 (ms) | unary calls/s | SubmitTasks x{b:,} p50 (ms) "
        f"| submit tasks/s | LeaseTasks x{b:,} p50 (ms) | lease tasks/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = {
        "connect": "Connect (fray: uvicorn+uvloop+httptools, connectrpc sync client on pyqwest)",
        "fray": "fray now: PlainUnary server, plain-socket client (fray.wire.plain_client)",
        "grpc": "gRPC (grpcio server, 4 threads; grpcio sync client)",
    }
    for stack, r in results.items():
        print(
            f"| {labels[stack]} | {r['unary_p50']:.3f} | {r['unary_p99']:.3f} "
            f"| {r['unary_rate']:,.0f} | {r['submit_p50']:.2f} | {r['submit_rate']:,.0f} "
            f"| {r['lease_p50']:.2f} | {r['lease_rate']:,.0f} |"
        )
    print()
    print(
        f"- unary: GetClusterSummary, {args.calls:,} calls one at a time after "
        f"{max(1, args.calls // 10):,} warm-up calls; nearest-rank percentiles; calls/s over "
        "the whole series."
    )
    print(
        f"- SubmitTasks: {b:,} TaskSpecs in one request ({any_result['submit_bytes'] / 1e3:,.0f} "
        f"kB), answered with {b:,} ids; LeaseTasks: a {any_result['lease_bytes'] / 1e3:,.0f} kB "
        f"answer of {b:,} LeasedTasks; p50 of {args.batches} calls after 3 warm-up calls each."
    )
    print(
        "- One server subprocess per stack, the client in the benchmark process, "
        "127.0.0.1, one stack at a time."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
