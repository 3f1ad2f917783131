#!/usr/bin/env bash
# Throughput cost of the access log and metrics: the same usersd build in three configurations, benchmarked
# in one run, interleaved (A B C, A B C, ...) so machine noise hits all three alike; medians reported.
#   A  default: access log line per request (JSON, to a file) + metrics in shared memory
#   B  log.access false: metrics only
#   C  log.access false, admin.port 0: neither (no metrics region, nothing recorded)
#   bench/observability_cost.sh [BUILD_DIR]    RUNS=5 SECONDS_PER_RUN=5 WORKERS=1 PATH_UNDER_TEST=/healthcheck
# Loopback only; every wrk run is bounded (RUNS x 3 x SECONDS).
set -euo pipefail
BUILD=${1:-build}
BIN=$(realpath "$BUILD/usersd")
RUNS=${RUNS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-16}
WORKERS=${WORKERS:-1}
TARGET=${PATH_UNDER_TEST:-/healthcheck}
command -v wrk >/dev/null || { echo "bench: wrk is not installed (make deps installs it)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "bench: $1 did not answer" >&2; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# CPU time (clock ticks) of the workers of a supervisor: busy requests/s swing with whatever else runs on a
# shared machine, CPU per request much less.
worker_ticks() { local t=0 pid; for pid in $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))

declare -A port sup
start() {  # name access admin_port
  local name=$1 access=$2 admin=$3 p
  p=$(free_port)
  [ "$admin" = auto ] && admin=$(free_port)
  mkdir -p "$work/$name"
  cat > "$work/$name/usersd.json" <<JSON
{"data_dir": "$work/$name/data", "runtime_dir": "$work/$name/run", "workers": $WORKERS,
 "http": {"port": $p}, "admin": {"port": $admin}, "log": {"level": "info", "access": $access}}
JSON
  USERSD_JWT_SECRET=bench-secret-0123456789abcdef0123456789 \
    "$BIN" start --foreground --config "$work/$name/usersd.json" >"$work/$name/usersd.log" 2>&1 &
  pids+=($!)
  sup[$name]=$!
  port[$name]=$p
  wait_http "http://127.0.0.1:$p/healthcheck"
}
start A true auto
start B false auto
start C false 0

declare -A results cpu
for run in $(seq 1 "$RUNS"); do
  for name in A B C; do
    before=$(worker_ticks "${sup[$name]}")
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:${port[$name]}$TARGET")
    after=$(worker_ticks "${sup[$name]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(awk -v t=$((after - before)) -v n="$n" -v u="$TICK_US" 'BEGIN { printf "%.2f", t * u / n }')
    results[$name]+="$rps "
    cpu[$name]+="$us "
    echo "run $run $name: $rps req/s, $us us CPU/request" >&2
  done
done
a=$(tr ' ' '\n' <<<"${results[A]}" | grep . | median)
b=$(tr ' ' '\n' <<<"${results[B]}" | grep . | median)
c=$(tr ' ' '\n' <<<"${results[C]}" | grep . | median)
ca=$(tr ' ' '\n' <<<"${cpu[A]}" | grep . | median)
cb=$(tr ' ' '\n' <<<"${cpu[B]}" | grep . | median)
cc=$(tr ' ' '\n' <<<"${cpu[C]}" | grep . | median)
echo "GET $TARGET, $WORKERS worker(s), wrk -t2 -c$CONNECTIONS, $RUNS x ${SECONDS_PER_RUN}s each, medians:"
# Relative to C, with awk (no bc on a minimal Debian).
vs_c() { awk -v x="$1" -v c="$c" 'BEGIN { printf "%+.1f%%", (x / c - 1) * 100 }'; }
printf '  A access log + metrics : %8.0f req/s (%s vs C)  %6.1f us worker CPU/request\n' "$a" "$(vs_c "$a")" "$ca"
printf '  B metrics only         : %8.0f req/s (%s vs C)  %6.1f us worker CPU/request\n' "$b" "$(vs_c "$b")" "$cb"
printf '  C neither              : %8.0f req/s            %6.1f us worker CPU/request\n' "$c" "$cc"
echo "  access log lines written by A: $(grep -c '"msg":"access"' "$work/A/usersd.log")"
