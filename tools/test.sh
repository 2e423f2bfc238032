#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, then the
# GoogleTest suites (ctest) and the Python suites (pytest, Debian's python3).
# Then the ctest suites again under ASan+UBSan (tools/asan.sh) unless
# FSRST_SKIP_SANITIZERS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
build=${FSRST_BUILD_DIR:-build}
echo "== ctest"
(cd "$build" && ctest --output-on-failure --timeout 600 -j2)
echo "== pytest"
FSRST_BUILD_DIR="$PWD/$build" /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=15 tests
if [[ ${FSRST_SKIP_SANITIZERS:-0} != 1 ]]; then
  # Measured on 2 busy cores: 17 min build + 15 min ctest. FSRST_SKIP_SANITIZERS=1 skips.
  echo "== ctest under ASan+UBSan (build-asan)"
  tools/asan.sh
fi
