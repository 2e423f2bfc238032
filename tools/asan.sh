#!/usr/bin/env bash
# Builds fsrst-serve with AddressSanitizer + UndefinedBehaviorSanitizer (gcc)
# into build-asan/ (or $FSRST_ASAN_BUILD_DIR) and runs the whole ctest suite
# there. Any report fails the test that produced it: ASan aborts on its first
# error, UBSan is built with -fno-sanitize-recover=all, LeakSanitizer fails
# the process at exit. Each test executable runs whole, as one ctest test
# (FSRST_CTEST_WHOLE_BINARIES, tests/CMakeLists.txt): a process under ASan takes
# seconds to start, so one per test made the stage about 3x slower (docs/testing.md).
#
#   tools/asan.sh [extra ctest args, e.g. -R face_sr_service_test]
# Also the Python suite against the ASan server binary:
#   FSRST_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -p no:cacheprovider tests
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FSRST_ASAN_BUILD_DIR:-build-asan}
export ASAN_OPTIONS="${FSRST_ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
FSRST_BUILD_DIR="$build" tools/build.sh -DFSRST_SANITIZE=address,undefined \
  -DFSRST_CTEST_WHOLE_BINARIES=ON
(cd "$build" && ctest --output-on-failure --timeout 600 -j2 "$@")
