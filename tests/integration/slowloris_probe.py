"""Measures how many slowloris connections it takes to stop usersd serving other clients (docs/security.md).

Not a test (no fixed expectation, it takes minutes): run it by hand, loopback only, inside a network
namespace like the integration suite:

  unshare --net sh -c 'ip link set lo up && build/venv/bin/python tests/integration/slowloris_probe.py \
      --bin build/usersd --workers 2 --threads 32'

For each attack size N it opens N connections that send a request head one byte every second (the classic
slowloris), either all from one address or spread over N addresses (127.0.0.x / 127.0.y.x: a botnet), then
checks whether a well-behaved client on 127.0.0.1 still gets GET /healthcheck answered within --patience
seconds. It prints the smallest N that stops it, per attack shape.
"""
import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import usersd_harness  # noqa: E402


def source_address(i, spread):
    if not spread:
        return "127.0.0.2"
    return f"127.0.{2 + i // 250}.{1 + i % 250}"


class Attack:
    def __init__(self, port, n, spread, every=1.0):
        self.socks, self.stop = [], threading.Event()
        for i in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(source_address(i, spread), 0))
                s.setblocking(False)
                s.send(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n")
                self.socks.append(s)
            except OSError:
                pass
        self.every = every
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(self.every):
            for s in list(self.socks):
                try:
                    s.send(b"X")
                except OSError:
                    self.socks.remove(s)

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def served(base, patience):
    try:
        return requests.get(base + "/healthcheck", headers={"Connection": "close"}, timeout=patience).status_code == 200
    except requests.RequestException:
        return False


def probe(args, spread):
    with tempfile.TemporaryDirectory() as tmp:
        config = {"workers": args.workers, "http": {"threads": args.threads}}
        if args.no_cap:
            config["http"]["max_connections_per_client"] = 1000000
        server = usersd_harness.Server(Path(tmp), config=config)
        # The harness raises the per-client cap for the functional suites; the probe measures the real default.
        doc = json.loads(server.config_path.read_text())
        if not args.no_cap or args.legacy:
            doc["http"].pop("max_connections_per_client", None)
        if args.legacy:  # a build from before these settings existed: it refuses unknown keys
            doc.pop("limits", None)
        server.config_path.write_text(json.dumps(doc))
        server.start()
        try:
            for n in args.sizes:
                attack = Attack(server.port, n, spread)
                time.sleep(args.settle)
                ok = all(served(server.base, args.patience) for _ in range(3))
                attack.close()
                print(f"  {'spread' if spread else 'one address'}: {n:4d} slow connections "
                      f"({len(attack.socks)} still open at the end) -> other client {'served' if ok else 'NOT SERVED'}",
                      flush=True)
                time.sleep(1)
                if not ok:
                    return n
            return None
        finally:
            server.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=usersd_harness.BIN)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--patience", type=float, default=5.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--no-cap", action="store_true", help="raise max_connections_per_client out of the way")
    p.add_argument("--legacy", action="store_true", help="the binary predates limits.* and the connection cap")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[8, 16, 32, 48, 64, 96, 128, 192, 256, 512])
    args = p.parse_args()
    usersd_harness.BIN = str(Path(args.bin).resolve())
    print(f"usersd {args.bin}: {args.workers} workers x {args.threads} threads")
    for spread in (False, True):
        n = probe(args, spread)
        shape = "spread over many addresses" if spread else "from one address"
        print(f"slowloris {shape}: " + (f"{n} connections stop other clients" if n else
                                        f"other clients still served at {args.sizes[-1]} connections"), flush=True)


if __name__ == "__main__":
    main()
