"""Start the real usersd binary on a free loopback port with its own temp dir, and talk to it."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

BIN = os.environ.get("USERSD_BIN", str(Path(__file__).resolve().parents[2] / "build" / "usersd"))
TEST_SECRET = "integration-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_log_records(text: str) -> list:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def require_binary():
    if not os.access(BIN, os.X_OK):
        raise RuntimeError(f"usersd binary not found at {BIN}: run `make build` or set USERSD_BIN")


class Server:
    """One `usersd start --foreground` process. Config keys can be overridden per test."""

    def __init__(self, tmp: Path, config: dict | None = None, env: dict | None = None, args: list | None = None):
        require_binary()
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()  # GET /metrics (supervisor)
        self.metrics_url = f"http://127.0.0.1:{self.admin_port}/metrics"
        self.db_path = tmp / "data" / "usersd.db"
        self.store_url = f"sqlite://{self.db_path}"
        # USERSD_TEST_STORE=mongodb (set by conftest's --store option) runs the same tests on MongoDB:
        # each server gets its own database on the session's FerretDB.
        if os.environ.get("USERSD_TEST_STORE") == "mongodb":
            # Named after the temp dir, so a restarted server on the same dir finds the same data.
            base = os.environ["USERSD_TEST_MONGODB_URL"]
            self.store_url = f"{base}usersd_{hashlib.sha1(str(tmp).encode()).hexdigest()[:16]}"
        cfg = {
            "env": "development",
            "data_dir": str(tmp / "data"),
            "runtime_dir": str(tmp / "run"),
            # Every test client is 127.0.0.1: the suites that are not about abuse limits would trip the
            # production ones (20 registrations an hour per address...). test_abuse_limits.py sets its own.
            "http": {"bind": "127.0.0.1", "port": self.port, "max_connections_per_client": 1000},
            "limits": {"login": {"per_account": {"max_attempts": 1000}, "per_address": {"max_attempts": 100000}},
                       "register": {"per_address": {"max_attempts": 100000}}},
            "admin": {"port": self.admin_port},
            "storage": {"url": self.store_url},
            "log": {"level": "info"},
        }
        if os.environ.get("USERSD_TEST_STORE") == "mongodb":
            cfg["workers"] = 2  # the fleet case: several workers sharing one database
        for key, value in (config or {}).items():
            if isinstance(value, dict):
                cfg.setdefault(key, {}).update(value)
            else:
                cfg[key] = value
        self.config_path = tmp / "usersd.json"
        self.config_path.write_text(json.dumps(cfg))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("USERSD_")}
        self.env["USERSD_JWT_SECRET"] = TEST_SECRET
        self.env.update(env or {})
        self.args = args or []
        self.log_path = tmp / "usersd.log"
        self.proc = None

    def start(self, timeout=15.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "start", "--foreground", "--config", str(self.config_path), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"usersd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.base + "/healthcheck", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"usersd did not answer within {timeout}s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=40.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list:
        """The JSON log lines (supervisor and workers) as dicts; other lines (a crash message) are skipped."""
        return parse_log_records(self.log())

    def cli(self, *args, input_text=None, extra_env=None):
        """Runs `usersd <args>` against this server's config and returns the CompletedProcess."""
        env = dict(self.env)
        env.update(extra_env or {})
        return subprocess.run([BIN, *args], input=input_text, env=env, capture_output=True, text=True, timeout=60)

    def add_user(self, email, password="correct horse battery", admin=False, first="Test", last="User"):
        cmd = ["user", "add", "--config", str(self.config_path), "--email", email,
               "--first-name", first, "--last-name", last]
        if admin:
            cmd.append("--admin")
        done = self.cli(*cmd, input_text=password + "\n")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # --- HTTP helpers -------------------------------------------------------------------------------
    def url(self, path):
        return self.base + path

    def login(self, email, password="correct horse battery"):
        r = requests.post(self.url("/v1/auth/login"), json={"email": email, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def register(self, email, password="correct horse battery", **extra):
        body = {"email": email, "password": password, "firstName": "Reg", "lastName": "User", **extra}
        return requests.post(self.url("/v1/auth/register"), json=body, timeout=10)

    def auth(self, token, scheme="Bearer"):
        return {"Authorization": f"{scheme} {token}"}


def assert_problem(response, status):
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"], body
    return body
