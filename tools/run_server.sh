#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine and runs the service with the
# shipped model on this machine (CPU): gRPC on :50051, metrics on :9464.
# Extra arguments go to fsrst_server (e.g. --model=model/weights/fsrst_x4_small.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
exec "${FSRST_BUILD_DIR:-build}/server/fsrst_server" --model=model/weights/fsrst_x4.pt "$@"
