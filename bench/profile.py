#!/usr/bin/env python3
"""`make bench-profile`: where one usersd worker spends its time under scenario 1 or 2 (GET /healthcheck,
GET /v1/users/{id} with a JWT), from `perf record` (Debian's linux-perf) sampling the worker while wrk runs.
Prints the split by library and the top symbols; docs/performance.md quotes it.

    bench/profile.py --build build [--scenario user|health] [--seconds 6]"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.load import wrk  # noqa: E402
from benchlib.seed import seed  # noqa: E402
from benchlib.servers import Usersd  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--scenario", choices=("user", "health"), default="user")
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="usersd-profile-") as work:
        data_file = Path(work) / "perf.data"
        with Usersd(Path(args.build).resolve() / "usersd", Path(work) / "usersd", 1) as usersd:
            data = seed(usersd, 10)
            worker = usersd.pids()["worker0"]
            perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-o", str(data_file), "-p", str(worker),
                                     "--", "sleep", str(args.seconds - 1)], stderr=subprocess.DEVNULL)
            if args.scenario == "user":
                r = wrk(f"{usersd.base}/v1/users/{data['user_id']}", args.seconds, 16, 1, "auth.lua",
                        {"BENCH_TOKEN": data["user_token"]})
            else:
                r = wrk(usersd.base + "/healthcheck", args.seconds, 16, 1)
            perf.wait()
        print(f"scenario {args.scenario}: {r['rps']:,.0f} req/s (1 worker, wrk -t1 -c16) while perf sampled worker {worker}")
        report = ["perf", "report", "-i", str(data_file), "--stdio", "-g", "none", "--percent-limit", "0.7"]
        for title, extra in (("by library", ["--no-children", "--sort", "dso"]),
                             ("top symbols (self)", ["--no-children", "--sort", "dso,sym"]),
                             ("syscalls and scheduling (inclusive)", ["--children", "--sort", "sym"])):
            out = subprocess.run(report + extra, capture_output=True, text=True).stdout
            lines = [l for l in out.splitlines() if "%" in l and not l.startswith("#")]
            if title.startswith("syscalls"):
                lines = [l for l in lines if "__x64_sys" in l or "schedule" in l][:12]
            print(f"\n{title}:\n" + "\n".join(l[:118] for l in lines[:30]))


if __name__ == "__main__":
    main()
