#!/usr/bin/env bash
# Make (or refresh) the project environment in .venv from the hash-pinned lock file.
# Idempotent: when pyproject.toml and the lock file are unchanged it returns in well under a second.
# Needs only a Python >= 3.11 with pip; installs uv with pip when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
LOCK=requirements/lock.txt
STAMP=.venv/.fray-bootstrap-stamp

stamp() { cat pyproject.toml "$LOCK" | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }

if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp)" ] \
    && .venv/bin/python -c "import fray" 2>/dev/null; then
    exit 0
fi

if command -v uv >/dev/null 2>&1; then
    UV=uv
else
    echo "bootstrap: uv not found, installing it with pip" >&2
    "$PYTHON" -m pip install --quiet --user uv || "$PYTHON" -m pip install --quiet uv
    UV="$("$PYTHON" -c 'import sysconfig,os,site; import shutil; print(shutil.which("uv") or os.path.join(site.USER_BASE, "bin", "uv"))')"
fi

[ -x .venv/bin/python ] || "$UV" venv --quiet --python "$PYTHON" .venv
# Dependencies strictly from the lock (every file hash-checked), then fray itself, editable, without deps.
"$UV" pip sync --quiet --python .venv/bin/python --require-hashes "$LOCK"
"$UV" pip install --quiet --python .venv/bin/python --no-deps -e .
stamp > "$STAMP"
echo "bootstrap: .venv is ready" >&2
