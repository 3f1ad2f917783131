"""The programs under test: usersd (supervisor + workers), nginx and the cpp-httplib ceiling.

Each is a context manager that starts the program on a free loopback port in a private temp dir and
stops it (and only it) on exit."""
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

JWT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
BENCH_DIR = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop_process(proc, sig_timeout=10.0):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(sig_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Usersd:
    """`usersd start --foreground` with N workers on SQLite (or BENCH_STORE_URL)."""

    def __init__(self, binary, workdir, workers, store_url=None, threads=None):
        self.binary = str(binary)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config_path = self.dir / "usersd.json"
        # The load generator is one client address: the per-client connection cap (docs/security.md) would
        # refuse most of its connections.
        http = {"port": self.port, "max_connections_per_client": 1000000}
        if threads:
            http["threads"] = threads
        config = {
            "data_dir": str(self.dir / "data"),
            "runtime_dir": str(self.dir / "run"),
            "workers": workers,
            "http": http,
            "log": {"level": "warn"},
            "admin": {"port": free_port()},  # /metrics listener: never the default 9464 another usersd may hold
        }
        if store_url:
            config["storage"] = {"url": store_url}
        self.config_path.write_text(json.dumps(config))
        self.env = dict(os.environ, USERSD_JWT_SECRET=JWT_SECRET)
        self.proc = None

    def cli(self, *args, stdin=None):
        r = subprocess.run([self.binary, *args, "--config", str(self.config_path)], input=stdin,
                           capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"usersd {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def __enter__(self):
        self.log = open(self.dir / "usersd.log", "w")
        self.proc = subprocess.Popen([self.binary, "start", "--foreground", "--config", str(self.config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_http(self.base + "/healthcheck")
            self.wait_workers_online()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        stop_process(self.proc, sig_timeout=40)
        self.log.close()

    def status(self):
        return json.loads(self.cli("status", "--json"))

    def wait_workers_online(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.status()["workers"]
            if workers and all(w.get("state") == "online" for w in workers):
                return workers
            time.sleep(0.1)
        raise RuntimeError("usersd workers did not all come online")

    def wait_idle(self, timeout=30.0):
        """Until no worker has a request in flight (heartbeats report it once a second)."""
        deadline = time.monotonic() + timeout
        time.sleep(1.1)
        while time.monotonic() < deadline:
            if all(w.get("in_flight", 0) == 0 for w in self.status()["workers"]):
                return
            time.sleep(0.2)

    def pids(self):
        """{'supervisor': pid, 'worker0': pid, ...}"""
        st = self.status()
        out = {"supervisor": st["supervisor"]["pid"]}
        for w in st["workers"]:
            out[f"worker{w['slot']}"] = w["pid"]
        return out

    def reload(self):
        return self.cli("reload")


class Ceiling:
    """One bench/ceiling_server per usersd worker on one SO_REUSEPORT port."""

    def __init__(self, binary, processes, threads):
        self.binary, self.processes, self.threads = str(binary), processes, threads
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs = []

    def __enter__(self):
        for _ in range(self.processes):
            self.procs.append(subprocess.Popen([self.binary, str(self.port), str(self.threads)]))
        try:
            wait_http(self.base + "/healthcheck")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            stop_process(p)


class Nginx:
    """Debian's nginx with bench/nginx.conf.in: `return 200`, one worker process per usersd worker."""

    def __init__(self, workdir, workers):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        conf = (BENCH_DIR / "nginx.conf.in").read_text()
        for key, value in {"WORKERS": workers, "DIR": self.dir, "PORT": self.port}.items():
            conf = conf.replace(f"@{key}@", str(value))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.conf)])
        try:
            wait_http(self.base + "/healthcheck")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)


class FerretDB:
    """FerretDB (MongoDB wire protocol on SQLite, built by `make ferretdb`) for BENCH_STORE=mongodb."""

    def __init__(self, binary, workdir):
        self.binary, self.dir = str(binary), Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def url(self, database):
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def __enter__(self):
        self.log = open(self.dir / "ferretdb.log", "w")
        self.proc = subprocess.Popen(
            [self.binary, "--handler=sqlite", f"--sqlite-url=file:{self.dir}/", f"--listen-addr=127.0.0.1:{self.port}",
             "--debug-addr=-", "--telemetry=disable", f"--state-dir={self.dir}", "--log-level=error"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("FerretDB did not start")

    def __exit__(self, *exc):
        stop_process(self.proc)
        self.log.close()
