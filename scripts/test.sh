#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: environment, lint, types, tests with coverage.
# Extra arguments go to pytest (e.g. scripts/test.sh -k e2e -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

# The dashboard test (tests/test_dashboard.py) drives Debian's chromium: install it when missing.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "== installing chromium and chromium-driver (for tests/test_dashboard.py)"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install chromium" >&2; exit 1; }
        sudo=(sudo -n)
    fi
    apt_install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
        --no-install-recommends chromium chromium-driver)
    if ! "${apt_install[@]}" >/dev/null; then
        "${sudo[@]}" apt-get update -qq >/dev/null
        "${apt_install[@]}" >/dev/null
    fi
fi

echo "== ruff"
ruff check src tests scripts examples
ruff format --check src tests scripts examples
echo "== mypy"
mypy
echo "== pytest"
rm -f .coverage .coverage.*
pytest --cov=fray --cov-report=term --cov-fail-under=80 "$@"
