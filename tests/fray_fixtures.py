"""Fixtures for fray's RPC layer: real controllers and real worker processes on loopback.

- `controller`: a ControllerServer on a free loopback port, served by uvicorn in a thread
  (for RPC-level tests; no workers).
- `cluster`: a LocalCluster (controller process + 2 worker processes), shared by a test module.
- `fray_ctx`: a FrayContext connected to `cluster`.
Everything is stopped at the end, whatever the test did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fray.job.rpc.context import FrayContext
from fray.job.rpc.controller import ControllerServer
from fray.job.rpc.local_cluster import LocalCluster

HEARTBEAT_TIMEOUT = 2.0


@pytest.fixture
def controller() -> Iterator[ControllerServer]:
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=HEARTBEAT_TIMEOUT).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(workers=2, concurrency=2, heartbeat_timeout=HEARTBEAT_TIMEOUT) as c:
        yield c


@pytest.fixture
def fray_ctx(cluster: LocalCluster) -> Iterator[FrayContext]:
    ctx = FrayContext(cluster.address, retry_timeout=10)
    try:
        yield ctx
    finally:
        ctx.close()
