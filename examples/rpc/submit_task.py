"""Submit a small batch of tasks to a fray controller and print the results.

    python examples/rpc/submit_task.py --controller http://127.0.0.1:7625
    FRAY_CONTROLLER_ADDRESS=http://127.0.0.1:7625 python examples/rpc/submit_task.py

Needs a controller (run_controller.py) and at least one worker (run_worker.py). The same code
runs on a thread pool or on Ray: only the argument of `create_job_ctx` changes.
"""

from __future__ import annotations

import argparse
import os
import random

from fray.job import create_job_ctx


# Functions defined here (in __main__) travel to the workers by value (cloudpickle); functions
# from your own modules must be importable on the workers.
def estimate_pi(samples: int, seed: int) -> float:
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(samples))
    return 4.0 * inside / samples


def where_am_i(weights: list[float]) -> str:
    # A worker sets FRAY_WORKER_ID for the tasks it runs.
    return f"{os.environ.get('FRAY_WORKER_ID', '?')} saw {len(weights)} weights"


def fails() -> None:
    raise ValueError("this task fails on purpose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--controller",
        default=None,
        help="the controller's address (default: $FRAY_CONTROLLER_ADDRESS)",
    )
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()

    # Fails within a few seconds (ControllerUnavailableError) when no controller answers.
    with create_job_ctx("fray", controller_address=args.controller) as ctx:
        # 1. A batch of tasks: run() returns futures at once; get() waits for all of them.
        futures = [ctx.run(estimate_pi, 20_000, seed) for seed in range(args.tasks)]
        estimates = ctx.get(futures)
        print(f"pi ~ {sum(estimates) / len(estimates):.3f} from {len(estimates)} tasks")

        # 2. put() stores a value once (not re-sent with every task); tasks get it as an argument.
        weights = ctx.put([0.5] * 1000)
        print("task says:", ctx.get(ctx.run(where_am_i, weights)))

        # 3. wait() returns the futures that are done (here: the first 2 of 4).
        futures = [ctx.run(estimate_pi, 1000, seed) for seed in range(4)]
        ready, _pending = ctx.wait(futures, num_returns=2)
        print(f"wait: {len(ready)} of {len(futures)} done first; all {len(ctx.get(futures))} now")

        # 4. A task's exception re-raises with its own type (and the remote traceback).
        try:
            ctx.get(ctx.run(fails))
        except ValueError as exc:
            print(f"the failing task raised ValueError: {exc}")
    # Leaving the `with` block closes the context (unfinished tasks are cancelled).
    print("done")


if __name__ == "__main__":
    main()
