#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: environment, lint, types, tests with coverage.
# Extra arguments go to pytest (e.g. scripts/test.sh -k e2e -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests scripts
ruff format --check src tests scripts
echo "== mypy"
mypy
echo "== pytest"
rm -f .coverage .coverage.*
pytest --cov=fray --cov-report=term --cov-fail-under=80 "$@"
