#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang-14 into build-fuzz/ and
# runs each, in parallel, for a fixed time from the committed seed corpus.
# Records libFuzzer's final stats (executions, coverage, crashes) in
# tests/fuzz/RESULTS.md (or $FSRST_FUZZ_RESULTS). Exits 1 if any target
# crashed, leaked, timed out or ran out of memory; the inputs are left in
# build-fuzz/artifacts/<target>/ (reproduce: build-fuzz/tests/fuzz/<target> <file>).
#
#   tools/fuzz.sh [seconds_per_target]   # default 60
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${FSRST_FUZZ_BUILD_DIR:-build-fuzz}
results=${FSRST_FUZZ_RESULTS:-tests/fuzz/RESULTS.md}
targets=(image_codec_fuzzer request_validation_fuzzer)

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-14 -DFSRST_BUILD_FUZZERS=ON -DFSRST_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

pids=()
for t in "${targets[@]}"; do
  name=${t%_fuzzer}
  # Fuzz into a scratch copy: new inputs stay out of the committed corpus.
  rm -rf "$build/corpus/$name" "$build/artifacts/$name"
  mkdir -p "$build/corpus/$name" "$build/artifacts/$name"
  cp tests/fuzz/corpus/"$name"/* "$build/corpus/$name/"
  dict=()
  if [[ $name == image_codec ]]; then dict=(-dict=tests/fuzz/jpeg.dict); fi
  # UBSan reports abort (halt_on_error), so they count as crashes too.
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
      -rss_limit_mb=2048 -artifact_prefix="$build/artifacts/$name/" "${dict[@]}" "$build/corpus/$name" \
      >"$build/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

stat() { grep -m1 "^stat::$2:" "$build/$1.log" | awk '{print $2}'; }
{
  echo "# Fuzzing results"
  echo
  echo "Written by \`tools/fuzz.sh $seconds\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit"
  echo "$(git rev-parse --short HEAD), $(nproc) cores, both targets in parallel,"
  echo "clang-14 -fsanitize=fuzzer,address,undefined. Findings = crash/leak/timeout/oom"
  echo "inputs libFuzzer wrote (it stops at the first). Coverage counts edges in the"
  echo "instrumented code only (imaging/image_codec.cc, server/request_validation.cc, the"
  echo "fuzzers): libjpeg-turbo and protobuf are Debian's uninstrumented builds."
  echo
  echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus (seed -> end) | peak RSS MB | findings |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for t in "${targets[@]}"; do
    name=${t%_fuzzer}
    log="$build/$name.log"
    execs=$(stat "$name" number_of_executed_units)
    secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $5}' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | awk '{print $2}')
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | awk '{print $2}')
    seeds=$(ls tests/fuzz/corpus/"$name" | wc -l)
    corp=$(ls "$build/corpus/$name" | wc -l)
    findings=$(find "$build/artifacts/$name" -type f | wc -l)
    echo "| $t | ${secs:-?} | ${execs:-?} | $(stat "$name" average_exec_per_sec) | ${cov:-?} | ${ft:-?} | $seeds -> $corp | $(stat "$name" peak_rss_mb) | $findings |"
  done
} >"$results"
cat "$results"
for t in "${targets[@]}"; do
  name=${t%_fuzzer}
  if [[ -n $(find "$build/artifacts/$name" -type f) ]]; then
    echo "fuzz: $t found: $(ls "$build/artifacts/$name")  (log: $build/$name.log)"
    status=1
  fi
done
exit $status
