#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, then the
# GoogleTest suites (ctest) and the Python suites (pytest, Debian's python3).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
build=${FSRST_BUILD_DIR:-build}
echo "== ctest"
(cd "$build" && ctest --output-on-failure --timeout 600 -j2)
echo "== pytest"
FSRST_BUILD_DIR="$PWD/$build" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests
