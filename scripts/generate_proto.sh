#!/usr/bin/env bash
# Regenerate the committed Python code for proto/ (src/fray/wire/pb/) with buf and local plugins.
# The proto package is fray.v1 (the wire names); the files sit in proto/fray/wire/pb/ so that
# the generated modules import each other as fray.wire.pb.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
buf lint
rm -f src/fray/wire/pb/*_pb2.py src/fray/wire/pb/*_pb2.pyi src/fray/wire/pb/*_connect.py
buf generate
printf '"""Generated from proto/fray/wire/pb/ by scripts/generate_proto.sh: do not edit."""\n' \
    > src/fray/wire/pb/__init__.py
