"""A fray.v2 worker pool: two workers, five calls, the results in order.

    python examples/v2/worker_pool.py                                  # local (the default)
    python examples/v2/worker_pool.py ray                              # a local Ray instance
    python examples/v2/worker_pool.py fray?address=http://127.0.0.1:7625
    FRAY_CLUSTER_SPEC=fray?address=http://127.0.0.1:7625 python examples/v2/worker_pool.py

The backend comes from the first argument, else $FRAY_CLUSTER_SPEC, else "local". The code
that uses the cluster is the same on every backend.
"""

from __future__ import annotations

import sys

from fray.v2 import ResourceSpec, create_cluster, current_cluster


def square(x: int) -> int:
    return x * x


def main() -> None:
    # create_cluster(spec) takes the same strings as $FRAY_CLUSTER_SPEC; current_cluster()
    # reads that variable (default "local").
    cluster = create_cluster(sys.argv[1]) if len(sys.argv) > 1 else current_cluster()
    print("cluster:", cluster)

    # Each pool worker holds its ResourceSpec for the pool's life (cpu=0: just a process). On
    # fray the workers are fray actors; on Ray, Ray actors; locally, child processes.
    with cluster.worker_pool(num_workers=2, resources=ResourceSpec(cpu=0)) as pool:
        futures = [pool.submit(square, i) for i in range(5)]  # concurrent.futures.Future
        print("Results:", [f.result(timeout=60) for f in futures])
        # map() is Executor.map: results in input order.
        print("map:", list(pool.map(square, range(5, 10), timeout=60)))


if __name__ == "__main__":  # needed: local pool workers import this file
    main()
