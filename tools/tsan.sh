#!/usr/bin/env bash
# Builds fsrst-serve with ThreadSanitizer into build-tsan/ (or
# $FSRST_TSAN_BUILD_DIR) and runs the concurrent suites: the dynamic batcher,
# the reference cache and the gRPC service tests. Any TSan report fails the
# test that produced it (halt_on_error), so a clean run means zero reports.
#
#   tools/tsan.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FSRST_TSAN_BUILD_DIR:-build-tsan}
FSRST_BUILD_DIR="$build" tools/build.sh -DFSRST_SANITIZE=thread
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
(cd "$build" && ctest --output-on-failure --timeout 600 -j2 \
  -R '^(DynamicBatcher|ReferenceCache|FaceSrService)' "$@")
