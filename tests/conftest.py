"""Shared fixtures for fray's tests.

``tests/`` is not a package: pytest puts this directory on ``sys.path`` to import this file,
so the sibling module ``fray_fixtures`` (fixtures for the fray controller/worker service,
such as ``fray_ctx``) is loaded as a plugin when it exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fray.common.net import free_port

if (Path(__file__).parent / "fray_fixtures.py").exists():
    pytest_plugins = ["fray_fixtures"]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A small local Ray instance shared by the whole test session; yields the ``ray`` module.

    Runs Ray's dashboard (the Ray backend's jobs use Ray's Jobs API) on a free port, so it
    cannot collide with another Ray instance (Ray's dashboard defaults to 8265).
    Reuses Ray when something already initialised it, and then leaves it running.
    """
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_port=free_port(),
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    yield ray
    if started:
        ray.shutdown()
