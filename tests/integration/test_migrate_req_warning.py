"""The supervisor warns at start when net.ipv4.tcp_migrate_req is 0 (queued connections would be reset)."""
import os
import signal
import subprocess
import time

from usersd_harness import BIN, Server


def _start_in_namespace(server: Server, migrate_req: int):
    """Runs `usersd start --foreground` in a fresh network namespace with the given sysctl value."""
    script = (f"ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req={migrate_req} && "
              f"exec {BIN} start --foreground --config {server.config_path}")
    log = open(server.log_path, "ab")
    return subprocess.Popen(["unshare", "--net", "sh", "-c", script], env=server.env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _log_once_online(server: Server, proc, timeout=15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()
        if "workers online" in text:
            return text
        assert proc.poll() is None, f"usersd exited early:\n{text}"
        time.sleep(0.05)
    raise AssertionError(f"usersd did not come online:\n{server.log()}")


def _stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0


def test_warns_when_tcp_migrate_req_is_off(tmp_path):
    server = Server(tmp_path, config={"workers": 1})
    proc = _start_in_namespace(server, 0)
    try:
        text = _log_once_online(server, proc)
        assert "tcp_migrate_req is 0" in text and "reset" in text
    finally:
        _stop(proc)


def test_no_warning_when_tcp_migrate_req_is_on(tmp_path):
    server = Server(tmp_path, config={"workers": 1})
    proc = _start_in_namespace(server, 1)
    try:
        assert "tcp_migrate_req" not in _log_once_online(server, proc)
    finally:
        _stop(proc)
