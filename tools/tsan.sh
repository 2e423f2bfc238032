#!/usr/bin/env bash
# Builds fsrst-serve with ThreadSanitizer into build-tsan/ (or
# $FSRST_TSAN_BUILD_DIR) against TSan-instrumented Abseil and gRPC
# (tools/tsan_deps.sh builds them from Debian's source packages the first
# time), then runs every suite with threads: the dynamic batcher, the
# reference cache, the service, tenant isolation, API keys and the C++ client,
# each against a real gRPC server. Any TSan report fails the test that
# produced it (halt_on_error), so a clean run means zero reports.
#
#   tools/tsan.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FSRST_TSAN_BUILD_DIR:-build-tsan}
deps=$(realpath -m "${FSRST_TSAN_DEPS_DIR:-build-tsan-deps}")
tools/tsan_deps.sh
FSRST_BUILD_DIR="$build" tools/build.sh -DFSRST_SANITIZE=thread -DCMAKE_PREFIX_PATH="$deps/prefix"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tools/tsan.supp"
tests=${FSRST_TSAN_TESTS:-'^(DynamicBatcher|ReferenceCache|FaceSrService|TenantIsolation|ApiKeys|FsrstClient)'}
(cd "$build" && ctest --output-on-failure --timeout 900 -j2 -R "$tests" "$@")
