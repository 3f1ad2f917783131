#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time on a scratch copy of its corpus, after replaying the kept
# crash reproducers (each must now pass). Usage: run.sh BUILD_DIR SECONDS TARGET...
# Prints stat::number_of_executed_units per target and writes them to BUILD_DIR/fuzz-stats.txt.
set -euo pipefail
build=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
stats="$build/fuzz-stats.txt"
: > "$stats"
for target in "$@"; do
  bin="$build/fuzz_$target"
  [ -x "$bin" ] || { echo "fuzz-test: $bin is missing (make fuzz-build)" >&2; exit 1; }
  reproducers=$(find "$here/crashes/$target" -type f ! -name .keep | sort)
  if [ -n "$reproducers" ]; then
    echo "== $target: replaying $(echo "$reproducers" | wc -l) kept crash reproducer(s)"
    # shellcheck disable=SC2086 # one argument per file
    "$bin" -runs=1 $reproducers
  fi
  work=$(mktemp -d)
  artifacts="$build/fuzz-artifacts/$target/"
  mkdir -p "$artifacts"
  echo "== $target: fuzzing for $seconds s"
  log="$build/fuzz-$target.log"
  # New inputs go to the scratch dir; the kept corpus (tests/fuzz/corpus) is only read.
  if ! "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$artifacts" "$work" "$here/corpus/$target" > "$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz-test: $target found a crash: the input is in $artifacts. Fix it, then keep the input in" \
         "tests/fuzz/crashes/$target/ so it is replayed from now on." >&2
    rm -rf "$work"
    exit 1
  fi
  units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "$target $units" | tee -a "$stats"
  rm -rf "$work"
done
