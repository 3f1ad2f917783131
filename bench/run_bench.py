#!/usr/bin/env python3
"""`make bench`: usersd's throughput, latency, memory and reload cost against nginx and a bare cpp-httplib
program, all measured in one run on this machine. Prints a table and writes bench/results/latest.json.

    bench/run_bench.py --build build [--out bench/results/latest.json]

Settings (environment): RUNS (3) x DURATION (5 s) per closed-loop figure, medians reported; CONNECTIONS (32)
and WRK_THREADS (2) for wrk; RATE (2000/s) and OPEN_SECONDS (5) for the open-loop latency runs; USERS (1000)
in the store; LOGIN_CLIENTS (8); RELOAD_RATE (1000/s) and RELOAD_SECONDS (8); WORKERS (CPUs available, at
least 2). BENCH_STORE=mongodb runs usersd on FerretDB (make ferretdb) instead of SQLite; FerretDB (on SQLite) is
then the bottleneck, so lower RATE and RELOAD_RATE to what it sustains (e.g. 200). Traffic goes to 127.0.0.1 only and every run is bounded in time."""
import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import memory, report  # noqa: E402
from benchlib.load import Vegeta, latency_summary, wrk  # noqa: E402
from benchlib.report import median  # noqa: E402
from benchlib.seed import PASSWORD, seed  # noqa: E402
from benchlib.servers import Ceiling, FerretDB, Nginx, Usersd  # noqa: E402


def env_int(name, default):
    return int(os.environ.get(name, default))


RUNS = env_int("RUNS", 3)
SECONDS = env_int("DURATION", 5)
CONNECTIONS = env_int("CONNECTIONS", 32)
WRK_THREADS = env_int("WRK_THREADS", 2)
RATE = env_int("RATE", 2000)
OPEN_SECONDS = env_int("OPEN_SECONDS", 5)
USERS = env_int("USERS", 1000)
LOGIN_CLIENTS = env_int("LOGIN_CLIENTS", 8)
RELOAD_RATE = env_int("RELOAD_RATE", 1000)
RELOAD_SECONDS = env_int("RELOAD_SECONDS", 8)
CPUS = len(os.sched_getaffinity(0))
WORKERS = env_int("WORKERS", max(2, CPUS))
THREADS = 32  # usersd's default http.threads; the ceiling gets the same


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    load = open("/proc/loadavg").read().split()[:3]
    return {"cpus": CPUS, "cpu_model": cpu, "kernel": platform.release(), "memory_gib": round(mem_kib / 2**20, 1),
            "loadavg_at_start": [float(x) for x in load], "tcp_migrate_req": open(
                "/proc/sys/net/ipv4/tcp_migrate_req").read().strip()}


def tool_versions(vegeta_bin):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {"wrk": first_line(["wrk", "-v"]), "nginx": first_line(["nginx", "-v"]),
            "vegeta": os.environ.get("VEGETA_VERSION", "?")}


def closed_loop(label, url, script="summary.lua", env=None, threads=WRK_THREADS, connections=CONNECTIONS):
    r = wrk(url, SECONDS, connections, threads, script=script, env=env)
    log(f"  {label}: {r['rps']:,.0f} req/s, failed {r['failed']}")
    return r


def summarize_runs(runs):
    return {"rps": median([r["rps"] for r in runs]), "failed": sum(r["failed"] for r in runs),
            "runs_rps": [round(r["rps"]) for r in runs],
            "latency_p50_ms": median([r["latency_us"]["p50"] / 1000 for r in runs]),
            "latency_p99_ms": median([r["latency_us"]["p99"] / 1000 for r in runs])}


def jain_index(counts):
    """1.0 when every client got the same share; 1/n when one client got everything."""
    total, squares = sum(counts), sum(c * c for c in counts)
    return round(total * total / (len(counts) * squares), 3) if squares else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "latest.json"))
    args = parser.parse_args()
    build = Path(args.build).resolve()
    usersd_bin, ceiling_bin = build / "usersd", build / "ceiling_server"
    vegeta_bin = os.environ.get("VEGETA", str(build / "tools" / "vegeta"))
    for needed in (usersd_bin, ceiling_bin, vegeta_bin):
        if not Path(needed).exists():
            sys.exit(f"bench: {needed} is missing (make bench builds and installs it)")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed (make bench-deps installs it)")
    vegeta = Vegeta(vegeta_bin)
    work = Path(tempfile.mkdtemp(prefix="usersd-bench-"))
    store = os.environ.get("BENCH_STORE", "sqlite")
    stack = contextlib.ExitStack()
    started = time.monotonic()
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "tools": tool_versions(vegeta_bin),
        "settings": {"runs": RUNS, "seconds": SECONDS, "connections": CONNECTIONS, "wrk_threads": WRK_THREADS,
                     "rate": RATE, "open_seconds": OPEN_SECONDS, "users": USERS, "login_clients": LOGIN_CLIENTS,
                     "reload_rate": RELOAD_RATE, "reload_seconds": RELOAD_SECONDS, "workers": WORKERS,
                     "threads_per_worker": THREADS, "store": store},
    }
    log(f"{CPUS} CPUs, {WORKERS} workers, {RUNS} x {SECONDS} s per figure, wrk -t{WRK_THREADS} -c{CONNECTIONS}")
    try:
        store_url = lambda database: None  # noqa: E731 (SQLite: a file in each usersd's own data_dir)
        if store == "mongodb":
            store_url = stack.enter_context(FerretDB(build / "tools" / "ferretdb", work / "ferretdb")).url
        with Nginx(work / "nginx", WORKERS) as nginx, Ceiling(ceiling_bin, WORKERS, THREADS) as ceiling, \
                Usersd(usersd_bin, work / "usersd", WORKERS, store_url("bench")) as usersd:
            data = seed(usersd, USERS)
            user_url = f"{usersd.base}/v1/users/{data['user_id']}"
            auth_env = {"BENCH_TOKEN": data["user_token"]}
            time.sleep(1.0)
            pids = usersd.pids()
            results["memory_idle"] = memory.snapshot(pids)

            log("closed loop (wrk), runs interleaved so drift hits every target alike")
            raw = {k: [] for k in ("nginx", "ceiling_health", "health", "ceiling_user", "user")}
            for run in range(RUNS):
                log(f" run {run + 1}/{RUNS}")
                raw["nginx"].append(closed_loop("nginx return 200", nginx.base + "/healthcheck"))
                raw["ceiling_health"].append(closed_loop("ceiling /healthcheck", ceiling.base + "/healthcheck"))
                raw["health"].append(closed_loop("usersd GET /healthcheck", usersd.base + "/healthcheck"))
                raw["ceiling_user"].append(closed_loop("ceiling user JSON", ceiling.base + "/v1/users/x"))
                raw["user"].append(closed_loop("usersd GET /v1/users/{id}", user_url, "auth.lua", auth_env))
            results["closed_loop"] = {k: summarize_runs(v) for k, v in raw.items()}

            log(f"login (Argon2id), {LOGIN_CLIENTS} clients")
            login_runs = []
            with memory.PeakSampler(pids) as login_peak:
                for _ in range(RUNS):
                    login_runs.append(closed_loop(
                        "usersd POST /v1/auth/login", usersd.base + "/v1/auth/login", "login.lua",
                        {"BENCH_EMAIL": data["user_email"], "BENCH_PASSWORD": PASSWORD},
                        threads=LOGIN_CLIENTS, connections=LOGIN_CLIENTS))
            login = summarize_runs(login_runs)
            login.update({"ok": sum(r["ok"] for r in login_runs), "rejected": sum(r["rejected"] for r in login_runs),
                          "other": sum(r["other"] for r in login_runs),
                          "fairness_jain": median([jain_index(r["ok_per_client"]) for r in login_runs]),
                          "ok_per_client": [r["ok_per_client"] for r in login_runs],
                          "latency_max_ms": median([r["latency_us"]["max"] / 1000 for r in login_runs]),
                          "peak_memory": login_peak.peak})
            results["login"] = login
            usersd.wait_idle()  # logins still queued behind the Argon2 gate would count as load below

            log(f"mixed 90 % GET / 10 % PATCH over {USERS} users")
            ids_file = work / "ids.txt"
            ids_file.write_text("\n".join(data["ids"]) + "\n")
            mixed_env = {"BENCH_TOKEN": data["admin_token"], "BENCH_IDS_FILE": str(ids_file)}
            with memory.PeakSampler(pids) as load_peak:
                mixed_runs = [closed_loop("usersd mixed", usersd.base, "mixed.lua", mixed_env) for _ in range(RUNS)]
            results["mixed"] = summarize_runs(mixed_runs)
            results["memory_load_peak"] = load_peak.peak

            log(f"open loop (vegeta) at {RATE} req/s")
            open_raw = {"nginx": [], "user": []}
            user_target = f"GET {user_url}\nAuthorization: Bearer {data['user_token']}\n"
            for _ in range(RUNS):
                open_raw["nginx"].append(latency_summary(vegeta.attack(
                    f"GET {nginx.base}/healthcheck\n", RATE, OPEN_SECONDS, max_connections=CONNECTIONS)[0]))
                open_raw["user"].append(latency_summary(vegeta.attack(
                    user_target, RATE, OPEN_SECONDS, max_connections=CONNECTIONS)[0]))
                log(f"  nginx p99 {open_raw['nginx'][-1]['p99_ms']:.2f} ms; "
                    f"usersd GET user p99 {open_raw['user'][-1]['p99_ms']:.2f} ms")
            results["open_loop"] = {k: {"rate": RATE, **{m: median([r[m] for r in v]) for m in
                                                          ("p50_ms", "p99_ms", "p999_ms", "max_ms")},
                                        "failed": sum(r["failed"] for r in v),
                                        "requests": sum(r["requests"] for r in v)} for k, v in open_raw.items()}

            log(f"rolling reload under {RELOAD_RATE} req/s")

            def reload_after_a_while(t0):
                time.sleep(RELOAD_SECONDS / 4)
                begin = time.time_ns()
                usersd.reload()
                return begin, time.time_ns()

            # A client pool of CONNECTIONS connections (as a load balancer keeps), then an unbounded one: vegeta
            # opens a connection whenever none is free, and each idle keep-alive connection holds one of a
            # worker's threads (cpp-httplib's model), so the second shows that limit, not the reload's.
            for key, pool in (("reload", CONNECTIONS), ("reload_unbounded_clients", None)):
                pids = usersd.pids()
                records, (begin, end) = vegeta.attack(user_target, RELOAD_RATE, RELOAD_SECONDS,
                                                      reload_after_a_while, max_connections=pool)
                new_pids = usersd.pids()
                results[key] = {
                    "rate": RELOAD_RATE, "seconds": RELOAD_SECONDS, "client_connections": pool or "unbounded",
                    "reload_s": round((end - begin) / 1e9, 2),
                    "workers_replaced": sum(1 for k, p in new_pids.items() if k != "supervisor" and p != pids.get(k)),
                    "all": latency_summary(records), "before": latency_summary(records, end_ns=begin),
                    # The spike lasts a little past the command: new workers' first requests, reconnections.
                    "during": latency_summary(records, begin, end + 10**9),
                    "after": latency_summary(records, start_ns=end + 10**9)}
                log(f"  client connections {pool or 'unbounded'}: failed {results[key]['all']['failed']} of "
                    f"{results[key]['all']['requests']}; p99 before {results[key]['before']['p99_ms']:.2f} ms, "
                    f"during {results[key]['during']['p99_ms']:.2f} ms")
                usersd.wait_idle()

        log("scaling: fewer workers")
        scaling = {str(WORKERS): {"health": results["closed_loop"]["health"]["rps"],
                                  "user": results["closed_loop"]["user"]["rps"]}}
        for workers in range(1, WORKERS):
            with Usersd(usersd_bin, work / f"usersd-{workers}", workers, store_url(f"bench{workers}")) as usersd:
                data = seed(usersd, 10)
                health, user = [], []
                for _ in range(RUNS):
                    health.append(closed_loop(f"{workers} worker(s) /healthcheck", usersd.base + "/healthcheck"))
                    user.append(closed_loop(f"{workers} worker(s) GET user", f"{usersd.base}/v1/users/{data['user_id']}",
                                            "auth.lua", {"BENCH_TOKEN": data["user_token"]}))
                scaling[str(workers)] = {"health": summarize_runs(health)["rps"], "user": summarize_runs(user)["rps"]}
        results["scaling"] = scaling
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)

    results["machine"]["loadavg_at_end"] = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    results["duration_s"] = round(time.monotonic() - started)
    results["targets"] = report.targets(results)
    out = Path(args.out)
    report.write_json(out, results)
    print()
    print(report.render(results))
    print(f"\nwritten: {out}")
    # Ratios below target are findings for docs/performance.md; a dropped request is a bug.
    dropped = {name: cl["failed"] for name, cl in results["closed_loop"].items() if cl["failed"]}
    if results["mixed"]["failed"]:
        dropped["mixed"] = results["mixed"]["failed"]
    if results["reload"]["all"]["failed"]:  # the unbounded-client run shows a known limit: reported, not fatal
        dropped["reload"] = results["reload"]["all"]["failed"]
    if dropped:
        sys.exit(f"bench: failed requests: {dropped}")


if __name__ == "__main__":
    main()
