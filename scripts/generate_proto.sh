#!/usr/bin/env bash
# Regenerate the committed Python code for proto/ (src/fray/v1/) with buf and local plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
buf lint
rm -f src/fray/v1/*_pb2.py src/fray/v1/*_pb2.pyi src/fray/v1/*_connect.py
buf generate
touch src/fray/v1/__init__.py
