"""FerretDB v1.24.2 (MongoDB wire protocol, SQLite backend) on a free loopback port, for the Mongo suites.

`make ferretdb` installs the binary into build/tools (go install, cached). A missing binary fails the
tests that need it with the reason; they are never skipped.
"""
import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FERRETDB = os.environ.get("USERSD_FERRETDB", str(ROOT / "build" / "tools" / "ferretdb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FerretDB:
    def __init__(self, workdir: Path, port: int | None = None):
        if not os.access(FERRETDB, os.X_OK):
            raise RuntimeError(f"FerretDB not found at {FERRETDB}: run `make ferretdb` (needs Go) or set USERSD_FERRETDB")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self.log_path = self.dir / "ferretdb.log"
        self.proc = None

    def start(self, timeout=30.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [FERRETDB, "--handler=sqlite", f"--sqlite-url=file:{self.dir}/", f"--listen-addr=127.0.0.1:{self.port}",
             "--debug-addr=-", "--telemetry=disable", f"--state-dir={self.dir}", "--log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"FerretDB exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"FerretDB did not listen within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def database_url(self, name: str) -> str:
        return f"{self.url}{name}"
