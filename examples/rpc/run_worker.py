"""Join a fray controller as a worker and run its tasks until Ctrl-C (or SIGTERM).

    python examples/rpc/run_worker.py --controller http://127.0.0.1:7625
    FRAY_CONTROLLER_ADDRESS=http://127.0.0.1:7625 python examples/rpc/run_worker.py

This is what `fray worker` does, through fray's Python API (`Worker`). Each task runs in an
executor process of its own, so a task that crashes, times out or is cancelled never takes the
worker down. On Ctrl-C/SIGTERM the worker stops leasing, lets running tasks finish (up to
--shutdown-grace seconds), hands the rest back to the controller and unregisters.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fray.worker.worker import Worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--controller",
        default=os.environ.get("FRAY_CONTROLLER_ADDRESS", "http://127.0.0.1:7625"),
        help="the controller's address (default: $FRAY_CONTROLLER_ADDRESS, else port 7625)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="tasks run at once (slots)")
    parser.add_argument("--worker-id", default="", help="its name (default: a random one)")
    parser.add_argument("--shutdown-grace", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    worker = Worker(
        args.controller,
        concurrency=args.concurrency,
        worker_id=args.worker_id,
        # The token, if the controller has one, is read from $FRAY_TOKEN. The worker serves
        # clients' direct calls on 127.0.0.1 and a free port; on other hosts give it
        # host="0.0.0.0" (and advertise_host=) so that clients can reach it.
        shutdown_grace=args.shutdown_grace,
    )
    print(
        f"worker {worker.worker_id} joining {args.controller} with {args.concurrency} slots",
        flush=True,
    )
    # Registers (retrying for up to 60 s while the controller is not up yet), then leases and
    # runs tasks until a signal; returns the exit status.
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
