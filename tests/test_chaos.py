"""The short form of scripts/chaos.py: real processes killed at random under a workload.

Each run starts its own controller and workers; the script prints one JSON line (``--json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "chaos.py"


def chaos(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--seed", "7", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@pytest.mark.timeout(320)
def test_workers_and_executors_killed_and_frozen_nothing_hangs_or_is_wrong() -> None:
    result = chaos(
        "--duration", "12", "--interval", "2", "--kinds", "worker-kill,executor-kill,worker-stop"
    )
    assert sum(result["kills"].values()) >= 3, result
    assert result["hung"] == 0 and result["wrong"] == 0, result
    assert result["exact"] + result["lost"] == result["submitted"], result
    assert result["actor_hung"] == 0 and result["actor_wrong"] == 0, result
    assert result["exact"] > 0 and result["actor_exact"] > 0, result


@pytest.mark.timeout(320)
def test_controller_killed_and_restarted_on_its_state_loses_nothing() -> None:
    """The issue's figure under load: SIGKILL + restart of the controller on the same --state,
    several times, with tasks queued, running and finished, `put` objects and a detached actor:
    every future ends with its exact value, none is lost, every actor call answers."""
    result = chaos(
        "--duration", "12", "--interval", "3", "--kinds", "controller-restart", "--no-loss"
    )
    assert result["kills"].get("controller-restart", 0) >= 2, result
    assert result["exact"] == result["submitted"] > 0, result
    assert result["lost"] == result["hung"] == result["wrong"] == 0, result
    assert result["actor_exact"] == result["actor_calls"] > 0, result
