"""Medians, the targets, the terminal table and bench/results/latest.json."""
import json
import statistics


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def table(rows, headers):
    """A plain text table; rows are lists of already formatted cells."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def write_json(path, results):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def targets(r):
    cl = r["closed_loop"]
    nginx = cl["nginx"]["rps"]
    worker_rss = max(v["rss_mib"] for k, v in r["memory_idle"].items() if k.startswith("worker"))
    worker_anon = max(v["anon_mib"] for k, v in r["memory_idle"].items() if k.startswith("worker"))
    return {
        "health_vs_nginx": {"value": round(cl["health"]["rps"] / nginx, 3), "target": ">= 0.5"},
        "user_vs_nginx": {"value": round(cl["user"]["rps"] / nginx, 3), "target": ">= 0.35"},
        "worker_idle_rss_mib": {"value": worker_rss, "target": "<= 10"},
        "worker_idle_anon_mib": {"value": worker_anon, "target": "(private part of the RSS)"},
        "reload_failed": {"value": r["reload"]["all"]["failed"], "target": "== 0"},
        "reload_failed_unbounded_clients": {"value": r["reload_unbounded_clients"]["all"]["failed"],
                                            "target": "== 0 (known limit)"},
    }


def render(r):
    cl, nginx = r["closed_loop"], r["closed_loop"]["nginx"]["rps"]
    m, s = r["machine"], r["settings"]
    parts = [f"usersd bench {r['date']}: {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, "
             f"load {m['loadavg_at_start'][0]} at start; {s['workers']} workers x {s['threads_per_worker']} threads; "
             f"medians of {s['runs']} x {s['seconds']} s"]

    def ratio(x, base):
        return f"{x / base:.2f}" if x and base else "-"
    rows = [
        ["1  nginx `return 200` (HTTP ceiling)", fmt(nginx), "1.00", "-", fmt(cl["nginx"]["failed"])],
        ["1  cpp-httplib ceiling /healthcheck", fmt(cl["ceiling_health"]["rps"]), ratio(cl["ceiling_health"]["rps"], nginx),
         "1.00", fmt(cl["ceiling_health"]["failed"])],
        ["1  usersd GET /healthcheck", fmt(cl["health"]["rps"]), ratio(cl["health"]["rps"], nginx),
         ratio(cl["health"]["rps"], cl["ceiling_health"]["rps"]), fmt(cl["health"]["failed"])],
        ["2  cpp-httplib ceiling, user JSON", fmt(cl["ceiling_user"]["rps"]), ratio(cl["ceiling_user"]["rps"], nginx),
         "1.00", fmt(cl["ceiling_user"]["failed"])],
        ["2  usersd GET /v1/users/{id} + JWT", fmt(cl["user"]["rps"]), ratio(cl["user"]["rps"], nginx),
         ratio(cl["user"]["rps"], cl["ceiling_user"]["rps"]), fmt(cl["user"]["failed"])],
        [f"4  usersd mixed 90/10, {s['users']} users", fmt(r["mixed"]["rps"]), ratio(r["mixed"]["rps"], nginx), "-",
         fmt(r["mixed"]["failed"])],
    ]
    parts.append(f"\nThroughput, closed loop (wrk -t{s['wrk_threads']} -c{s['connections']}), req/s:\n" + table(
        rows, ["scenario", "req/s", "x nginx", "x ceiling", "failed"]))

    lg = r["login"]
    worker_keys = sorted(k for k in r["memory_idle"] if k.startswith("worker"))
    login_peak = max(lg["peak_memory"][k].get("rss_mib", 0) for k in worker_keys)
    parts.append(
        f"\n3  POST /v1/auth/login (Argon2id), {s['login_clients']} clients: {fmt(lg['rps'], 1)} req/s, "
        f"p50 {fmt(lg['latency_p50_ms'], 1)} ms, p99 {fmt(lg['latency_p99_ms'], 1)} ms, "
        f"max {fmt(lg['latency_max_ms'], 1)} ms; fairness (Jain) {lg['fairness_jain']}; "
        f"200: {lg['ok']}, 429/503: {lg['rejected']}, other: {lg['other']}; peak worker RSS {login_peak} MiB")

    rows = [[w, fmt(v["health"]), fmt(v["health"] / int(w)), fmt(v["user"]), fmt(v["user"] / int(w))]
            for w, v in sorted(r["scaling"].items(), key=lambda kv: int(kv[0]))]
    parts.append("\nScaling (req/s):\n" + table(
        rows, ["workers", "/healthcheck", "per worker", "GET user", "per worker"]))

    rows = [[name, fmt(v["p50_ms"], 2), fmt(v["p99_ms"], 2), fmt(v["p999_ms"], 2), fmt(v["max_ms"], 2),
             fmt(v["failed"])] for name, v in (("nginx return 200", r["open_loop"]["nginx"]),
                                              ("usersd GET /v1/users/{id}", r["open_loop"]["user"]))]
    parts.append(f"\nLatency, open loop at {s['rate']} req/s (vegeta, {s['connections']} client connections), ms:\n" + table(
        rows, ["target", "p50", "p99", "p99.9", "max", "failed"]))

    rows = []
    for k in ["supervisor"] + worker_keys:
        idle, peak = r["memory_idle"][k], r["memory_load_peak"].get(k, {})
        rows.append([k, fmt(idle["rss_mib"], 1), fmt(idle["anon_mib"], 1), fmt(idle["pss_mib"], 1),
                     fmt(peak.get("rss_mib"), 1), fmt(peak.get("anon_mib"), 1)])
    parts.append("\nMemory, MiB (RSS = VmRSS incl. shared libraries; anon = private; PSS = fair share):\n" +
                 table(rows, ["process", "idle RSS", "idle anon", "idle PSS", "load RSS", "load anon"]))

    rows = []
    for key in ("reload", "reload_unbounded_clients"):
        rl = r[key]
        rows.append([rl["client_connections"], rl["workers_replaced"], fmt(rl["reload_s"], 2),
                     f"{rl['all']['failed']} / {rl['all']['requests']}", fmt(rl["before"]["p99_ms"], 2),
                     fmt(rl["during"]["p99_ms"], 2), fmt(rl["during"]["max_ms"], 1), fmt(rl["after"]["p99_ms"], 2)])
    parts.append(f"\nRolling reload under {r['reload']['rate']} req/s open loop (during = from the reload until 1 s "
                 f"after it), ms:\n" + table(rows, ["client conns", "replaced", "reload s", "failed / sent",
                                                         "p99 before", "p99 during", "max during", "p99 after"]))

    rows = [[k, v["value"], v["target"]] for k, v in r["targets"].items()]
    parts.append("\nTargets:\n" + table(rows, ["measure", "value", "target"]))
    return "\n".join(parts)
