"""Start a fray controller, print its address, and serve until Ctrl-C (or SIGTERM).

    python examples/rpc/run_controller.py                  # http://127.0.0.1:7625, in memory
    python examples/rpc/run_controller.py --port 0         # any free port (printed)
    python examples/rpc/run_controller.py --state fray.db  # durable: survives restarts

This is what `fray controller` does, through fray's Python API (`ControllerServer`). Off
loopback (`--host 0.0.0.0`) the controller needs a token: set $FRAY_TOKEN for it, its workers
and its clients (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import logging
import os

from fray.controller.server import IN_MEMORY, ControllerServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=7625, help="port; 0 picks a free one")
    parser.add_argument(
        "--state", default=IN_MEMORY, help="SQLite file for durable state (default: in memory)"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    # Binding the socket happens here, so with --port 0 `server.address` already names the port
    # the controller got. The token (None on loopback is fine) comes from the environment, never
    # from a flag that `ps` would show.
    server = ControllerServer(
        args.host, args.port, token=os.environ.get("FRAY_TOKEN") or None, state_path=args.state
    )
    # One line on stdout that a script (or a test) can read to learn the address.
    print(f"controller listening on {server.address}", flush=True)
    print(f"  workers:  python examples/rpc/run_worker.py --controller {server.address}")
    print(
        f"  clients:  FRAY_CONTROLLER_ADDRESS={server.address} python examples/rpc/submit_task.py"
    )
    print(f"  watch it: fray status --controller {server.address}   (or open it in a browser)")
    print("Ctrl-C to stop", flush=True)

    # Serve in this thread until SIGINT/SIGTERM: uvicorn handles the signal, open long polls are
    # answered, the state (if durable) is flushed, and run() returns.
    server.run()
    print("controller stopped", flush=True)


if __name__ == "__main__":
    main()
