#!/usr/bin/env bash
# fray's main job end to end: a controller, 2 workers and a job submitted through
# create_job_ctx("fray"), all on loopback, then a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/fray --log-level WARNING demo "$@"
