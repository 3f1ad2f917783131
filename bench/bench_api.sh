#!/usr/bin/env bash
# One-worker API throughput and login latency, as ratios against a ceiling measured in the same run.
#   bench/bench_api.sh [BUILD_DIR]     (make bench)
#   BENCH_STORE=mongodb bench/bench_api.sh   the same against FerretDB (MongoDB wire protocol, make ferretdb)
# Loopback only; every wrk run is bounded (RUNS x SECONDS). The machine is shared and noisy: medians.
set -euo pipefail
BUILD=${1:-build}
BIN=$(realpath "$BUILD/usersd")
CEILING=$(realpath "$BUILD/ceiling_server")
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-16}
command -v wrk >/dev/null || { echo "bench: wrk is not installed (make deps installs it)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "bench: $1 did not answer" >&2; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Requests/s from one wrk run (wrk prints e.g. "Requests/sec:  12345.67").
wrk_rps() { wrk "$@" | awk '/Requests\/sec/ {print $2}'; }

store_url="sqlite://$work/data/usersd.db"
if [ "${BENCH_STORE:-sqlite}" = mongodb ]; then
  ferret_port=$(free_port)
  mkdir -p "$work/ferret"
  "$BUILD/tools/ferretdb" --handler=sqlite --sqlite-url="file:$work/ferret/" --listen-addr="127.0.0.1:$ferret_port" \
    --debug-addr=- --telemetry=disable --state-dir="$work/ferret" --log-level=error >"$work/ferret.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$ferret_port") 2>/dev/null && break; sleep 0.1; done
  store_url="mongodb://127.0.0.1:$ferret_port/usersd_bench"
fi

port=$(free_port)
cat > "$work/usersd.json" <<JSON
{"data_dir": "$work/data", "runtime_dir": "$work/run", "workers": 1,
 "http": {"port": $port}, "storage": {"url": "$store_url"}, "log": {"level": "warn"}}
JSON
USERSD_JWT_SECRET=bench-secret-0123456789abcdef0123456789 "$BIN" start --foreground --config "$work/usersd.json" \
  >"$work/usersd.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/healthcheck"

base="http://127.0.0.1:$port"
curl -sf -XPOST "$base/v1/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"correct horse battery","firstName":"Bench","lastName":"User"}' >/dev/null
token=$(curl -sf -XPOST "$base/v1/auth/login" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"correct horse battery"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
id=$(curl -sf "$base/v1/users/me" -H "Authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
cat > "$work/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
LUA
cat > "$work/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"correct horse battery"}'
LUA

ceiling_port=$(free_port)
"$CEILING" "$ceiling_port" & pids+=($!)
wait_http "http://127.0.0.1:$ceiling_port/"

echo "store ${BENCH_STORE:-sqlite}; runs: $RUNS x ${SECONDS_PER_RUN}s, $CONNECTIONS keep-alive connections, 1 worker, $(nproc) CPUs"
get_rps=(); ceiling_rps=()
for _ in $(seq 1 "$RUNS"); do
  ceiling_rps+=("$(wrk_rps -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$ceiling_port/v1/users/$id")")
  get_rps+=("$(wrk_rps -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$work/auth.lua" "$base/v1/users/$id")")
done
ceiling=$(printf '%s\n' "${ceiling_rps[@]}" | median)
get=$(printf '%s\n' "${get_rps[@]}" | median)
echo "GET /v1/users/{id}: median $get req/s; ceiling (bare cpp-httplib, same body) $ceiling req/s; ratio $(python3 -c "print(round($get/$ceiling, 3))")"

# Login is dominated by Argon2id (19 MiB, t=2) and bounded by password.max_concurrent_hashes.
login_out=$(wrk -t1 -c2 -d"${SECONDS_PER_RUN}s" --latency -s "$work/login.lua" "$base/v1/auth/login")
echo "POST /v1/auth/login (2 connections): $(echo "$login_out" | awk '/Requests\/sec/ {print $2}') req/s; latency p50 $(echo "$login_out" | awk '/ 50%/ {print $2}'), p99 $(echo "$login_out" | awk '/ 99%/ {print $2}')"
status=$("$BIN" status --json --config "$work/usersd.json")
echo "RSS after the runs: worker $(echo "$status" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["workers"][0]["rss_bytes"]/1048576,1))') MiB, supervisor $(echo "$status" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["supervisor"]["rss_bytes"]/1048576,1))') MiB"
