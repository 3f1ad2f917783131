"""Load generators: wrk (closed loop, throughput) and vegeta (open loop at a fixed rate, latency).

wrk keeps N connections busy and measures how many requests/s the server completes; its latencies suffer
from coordinated omission (a slow response delays the requests behind it instead of being counted against
them), so latency percentiles come from vegeta, which sends at a fixed rate whatever the server does."""
import csv
import io
import json
import os
import subprocess
import time
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


def wrk(url, seconds, connections, threads, script="summary.lua", env=None, timeout_s=10):
    """One wrk run; returns the BENCH_JSON summary of bench/lua/summary.lua plus rps."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s",
           "-s", str(LUA_DIR / script), url]
    run_env = dict(os.environ, BENCH_LUA_DIR=str(LUA_DIR), **(env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=run_env, check=True,
                         timeout=seconds + 60).stdout
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    result = json.loads(line[len("BENCH_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["failed"] = sum(result["errors"].values())
    return result


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-p / 100 * len(sorted_values) // 1)))  # ceil
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Vegeta:
    def __init__(self, binary):
        self.binary = str(binary)

    def attack(self, targets, rate, seconds, during=None, max_connections=None):
        """Sends `rate` requests/s for `seconds` over the targets (vegeta's text format) and returns
        one record per request: (start_ns, status, latency_ns). `during(t0)` runs while the attack does.
        max_connections bounds the client's connection pool, as a load balancer's or a service client's
        is; a request waiting for a free connection still counts that wait in its latency."""
        limit = [f"-max-connections={max_connections}"] if max_connections else []
        attack = subprocess.Popen(
            [self.binary, "attack", f"-rate={rate}/s", f"-duration={seconds}s", "-timeout=10s",
             "-keepalive=true", "-max-body=0", *limit],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
        t0 = time.time_ns()
        attack.stdin.write(targets.encode())
        attack.stdin.close()
        marks = during(t0) if during else None
        encoded = subprocess.run([self.binary, "encode", "--to=csv"], stdin=attack.stdout, capture_output=True,
                                 check=True, timeout=seconds + 60).stdout.decode()
        attack.wait(timeout=seconds + 60)
        records = []
        for row in csv.reader(io.StringIO(encoded)):
            # timestamp (ns), status (0 = transport error), latency (ns), bytes out, bytes in, error, ...
            records.append((int(row[0]), int(row[1]), int(row[2])))
        records.sort()
        return records, marks


def latency_summary(records, start_ns=None, end_ns=None):
    """p50/p99/p99.9/max in ms and the failures among records sent in [start_ns, end_ns)."""
    chosen = [r for r in records if (start_ns is None or r[0] >= start_ns) and (end_ns is None or r[0] < end_ns)]
    lat = sorted(r[2] / 1e6 for r in chosen)
    failed = sum(1 for r in chosen if not 200 <= r[1] < 400)
    return {
        "requests": len(chosen),
        "failed": failed,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else None,
    }
