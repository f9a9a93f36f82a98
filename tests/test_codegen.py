"""The committed generated code matches proto/, and the protos pass buf lint."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_buf_lint() -> None:
    result = subprocess.run([BIN / "buf", "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    result = subprocess.run(
        [BIN / "buf", "generate", "--output", tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = tmp_path / "src" / "fray" / "wire" / "pb"
    committed = ROOT / "src" / "fray" / "wire" / "pb"
    names = sorted(p.name for p in fresh.iterdir())
    assert names, "buf generate produced nothing"
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"generated code is stale ({mismatch + errors}): run scripts/generate_proto.sh"
    )
