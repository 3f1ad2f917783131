"""Observability: JSON log lines with request ids, the access log, supervisor events, and /metrics on the
admin listener (totals of every worker, kept across worker restarts, valid for promtool)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from supervisor_helpers import alive, http_request, supervisors, wait_until  # noqa: F401 - fixture
from usersd_harness import assert_problem

PROMETHEUS_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def scrape(url):
    r = requests.get(url, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.text


def samples(text, name):
    """{labels text: value} of every sample of metric `name`."""
    out = {}
    for line in text.splitlines():
        m = PROMETHEUS_SAMPLE.match(line)
        if m and m["name"] == name:
            out[m["labels"] or ""] = float(m["value"])
    return out


def total(text, name, **labels):
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for lbl, v in samples(text, name).items() if all(w in lbl.split(",") for w in want))


def access_lines(server, **match):
    return [r for r in server.log_records() if r.get("msg") == "access" and all(r.get(k) == v for k, v in match.items())]


def wait_for_access(server, request_id, timeout=5.0):
    """The access line is written after the response: wait for it (bounded)."""
    return wait_until(lambda: access_lines(server, request_id=request_id), timeout, message=f"access line {request_id}")[0]


def promtool():
    tool = shutil.which("promtool")
    if tool is None:
        raise AssertionError("promtool not found: it comes with Debian's `prometheus` package (make deps installs it)")
    return tool


# --- logs ---------------------------------------------------------------------------------------------

def test_every_line_is_json_with_time_level_component_and_pid(server):
    requests.get(server.url("/healthcheck"), timeout=5)
    wait_until(lambda: access_lines(server), 5, message="an access line")
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)  # every line, supervisor's and workers', is one JSON object
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
        assert record["level"] in ("trace", "debug", "info", "warn", "error", "critical"), record
        assert record["component"] in ("supervisor", "worker"), record
        assert isinstance(record["pid"], int) and isinstance(record["msg"], str), record
        if record["component"] == "worker":
            assert isinstance(record["slot"], int), record


def test_access_line_fields(server):
    server.register("fields@example.com")
    token = server.login("fields@example.com")
    trace = "Root=1-67891233-abcdef012345678912345678"
    r = requests.get(server.url("/v1/users/me"), headers={**server.auth(token), "X-Request-Id": "req-fields.1",
                                                          "X-Amzn-Trace-Id": trace}, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "req-fields.1"
    line = wait_for_access(server, "req-fields.1")
    assert line["method"] == "GET" and line["route"] == "/v1/users/me" and line["path"] == "/v1/users/me"
    assert line["status"] == 200 and line["bytes"] == int(r.headers["Content-Length"])  # as sent (gzip)
    assert line["duration_ms"] >= 0 and line["client"] == "127.0.0.1"
    assert line["user_id"] == r.json()["id"]
    assert line["trace_id"] == trace
    assert line["level"] == "info" and line["component"] == "worker" and isinstance(line["slot"], int)


def test_route_template_not_path_and_no_user_when_anonymous(server):
    r = requests.get(server.url("/v1/users/64b0c0ffee0000000000abcd"), headers={"X-Request-Id": "anon-1"}, timeout=5)
    assert r.status_code == 401
    line = wait_for_access(server, "anon-1")
    assert line["route"] == "/v1/users/{id}" and line["path"] == "/v1/users/64b0c0ffee0000000000abcd"
    assert "user_id" not in line and "trace_id" not in line


@pytest.mark.parametrize("bad_id", ["x" * 129, "has space", "semi;colon", "quote\"", "ünïcode"])
def test_insane_request_ids_are_replaced(server, bad_id):
    r = requests.get(server.url("/healthcheck"), headers={"X-Request-Id": bad_id.encode()}, timeout=5)
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    assert rid != bad_id and re.fullmatch(r"[0-9a-f]{24}", rid), rid
    wait_for_access(server, rid)


def test_request_id_on_every_error_path_and_in_problem_bodies(server):
    cases = [
        ("GET", "/nope", {}, None, 404),
        ("DELETE", "/healthcheck", {}, None, 405),
        ("POST", "/v1/auth/login", {"Content-Type": "text/plain"}, b"x", 415),
        ("POST", "/v1/auth/login", {"Content-Type": "application/json"}, b"{", 400),
        ("POST", "/v1/auth/login", {"Content-Type": "application/json"}, b"x" * (70 * 1024), 413),
    ]
    for method, path, headers, body, status in cases:
        rid = f"err-{status}"
        r = requests.request(method, server.url(path), headers={**headers, "X-Request-Id": rid}, data=body, timeout=5)
        problem = assert_problem(r, status)
        assert r.headers["X-Request-Id"] == rid, (status, r.headers)
        assert problem["requestId"] == rid, problem
        assert wait_for_access(server, rid)["status"] == status


def test_request_id_when_httplib_rejects_the_request_line(server):
    """httplib answers a malformed request line itself, before any routing: the id is there too."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /a b c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    rid = re.search(rb"\r\nX-Request-Id: ([0-9a-f]{24})(\r\n|$)", head)
    assert rid, head
    assert json.loads(body)["requestId"] == rid.group(1).decode()
    line = wait_for_access(server, rid.group(1).decode())
    assert line["status"] == 400 and line["client"] == "127.0.0.1"


def test_client_address_from_trusted_proxy_only(supervisors):
    sup = supervisors(config={"workers": 1, "http": {"trusted_proxies": ["127.0.0.1"]}}).start()
    r = http_request(sup.port, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Request-Id": "xff-1"})
    assert r.status == 200
    assert wait_for_access(sup, "xff-1")["client"] == "198.51.100.7"  # the right-most entry the proxy wrote

    untrusting = supervisors(config={"workers": 1}, name="untrusting").start()
    r = http_request(untrusting.port, headers={"X-Forwarded-For": "203.0.113.9", "X-Request-Id": "xff-2"})
    assert r.status == 200
    assert wait_for_access(untrusting, "xff-2")["client"] == "127.0.0.1"  # no trusted proxy: the peer


def test_access_log_can_be_switched_off_and_text_format_is_readable(supervisors):
    sup = supervisors(config={"workers": 1, "log": {"access": False, "format": "text"}}).start()
    r = http_request(sup.port, headers={"X-Request-Id": "quiet-1"})
    assert r.status == 200
    r = http_request(sup.port, path="/nope", headers={"X-Request-Id": "quiet-2"})
    assert r.status == 404
    # The request is counted even without its log line.
    wait_until(lambda: total(scrape(sup.metrics_url), "usersd_http_requests_total", status_class="4xx") >= 1, 5,
               message="the 404 counted")
    text = sup.log()
    assert "quiet-1" not in text and "quiet-2" not in text
    assert re.search(rf"^\S+Z info \[supervisor {sup.supervisor_pid}\] .*ready in", text, re.M), text[-2000:]


def test_log_file_is_reopened_on_sigusr1(supervisors, tmp_path):
    log_file = tmp_path / "logs" / "usersd.log"
    log_file.parent.mkdir()
    sup = supervisors(config={"workers": 2, "log": {"file": str(log_file)}})
    sup.log = lambda: log_file.read_text(errors="replace") if log_file.exists() else ""  # lines go to the file
    sup.start()
    rotated = log_file.with_suffix(".log.1")
    log_file.rename(rotated)
    os.kill(sup.supervisor_pid, signal.SIGUSR1)
    # The line announcing the reopen is queued before the reopen: it may land in either file.
    wait_until(lambda: log_file.exists() and "reopening log files" in rotated.read_text() + sup.log(), 5,
               message="reopen")
    # Both workers write to the new file after the signal.
    def workers_in_new_file():
        for i in range(20):
            http_request(sup.port, headers={"X-Request-Id": f"after-rotate-{i}"})
        slots = {r.get("slot") for r in access_lines(sup)}
        return slots >= {0, 1}
    wait_until(workers_in_new_file, 15, interval=0.2, message="both workers logging to the reopened file")
    # Every process has moved: nothing more goes to the rotated file.
    size = rotated.stat().st_size
    for i in range(20):
        assert http_request(sup.port, headers={"X-Request-Id": f"later-{i}"}).status == 200
    wait_until(lambda: len([r for r in access_lines(sup) if r["request_id"].startswith("later-")]) == 20, 5,
               message="the later lines in the new file")
    assert rotated.stat().st_size == size


def test_supervisor_events_have_fields(supervisors):
    sup = supervisors(config={"workers": 1}).start()
    victim = sup.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: [r for r in sup.log_records() if r.get("event") == "worker_ready" and r["worker_pid"] != victim],
               15, message="the replacement worker ready")
    records = sup.log_records()
    spawned = [r for r in records if r.get("event") == "worker_spawned"]
    assert len(spawned) >= 2 and all(r["component"] == "supervisor" and r["worker_slot"] == 0 for r in spawned)
    exited = [r for r in records if r.get("event") == "worker_exited"]
    assert exited and exited[0]["worker_pid"] == victim and exited[0]["signal"] == "SIGKILL", exited
    assert exited[0]["restart_in_ms"] >= 0 and exited[0]["level"] == "warn"
    assert sup.ctl("reload").returncode == 0
    wait_until(lambda: [r for r in sup.log_records() if r.get("event") == "worker_finished"], 15,
               message="the replaced worker finished")
    events = [r.get("event") for r in sup.log_records()]
    for event in ("reload_started", "replacement_queued", "reload_finished"):
        assert event in events, events
    sup.stop()
    events = [r.get("event") for r in sup.log_records()]
    assert "stop" in events and "drain" in events and events[-1] == "supervisor_exiting", events[-6:]


# --- metrics ------------------------------------------------------------------------------------------

def test_metrics_pass_promtool(server):
    server.register("prom@example.com")
    token = server.login("prom@example.com")
    requests.post(server.url("/v1/auth/login"), json={"email": "prom@example.com", "password": "wrong password!"},
                  timeout=10)
    requests.get(server.url("/v1/users/me"), headers=server.auth(token), timeout=5)
    requests.get(server.url("/nope"), timeout=5)
    text = scrape(server.metrics_url)
    done = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"promtool: {done.stdout}{done.stderr}\n{text[:3000]}"
    for name in ("usersd_http_requests_total", "usersd_http_request_duration_seconds_bucket",
                 "usersd_http_requests_in_flight", "usersd_logins_total", "usersd_store_errors_total",
                 "usersd_store_operation_duration_seconds_bucket", "usersd_worker_restarts_total",
                 "usersd_worker_resident_memory_bytes", "usersd_worker_cpu_seconds_total",
                 "usersd_supervisor_reloads_total"):
        assert samples(text, name), f"{name} missing:\n{text[:3000]}"
    assert total(text, "usersd_logins_total", result="success") == 1
    assert total(text, "usersd_logins_total", result="failure") == 1
    assert total(text, "usersd_http_requests_total", route="/v1/users/me", method="GET", status_class="2xx") == 1
    assert total(text, "usersd_store_operation_duration_seconds_count", operation="find_by_email") >= 2


def test_metrics_are_not_on_the_public_port(server):
    r = requests.get(server.url("/metrics"), timeout=5)
    assert_problem(r, 404)
    assert requests.get(server.metrics_url, timeout=5).status_code == 200


def test_admin_port_zero_disables_the_listener(supervisors):
    sup = supervisors(config={"workers": 1, "admin": {"port": 0}}).start()
    with pytest.raises(requests.ConnectionError):
        requests.get(sup.metrics_url, timeout=2)
    st = sup.status()
    assert st["supervisor"]["metrics_url"] is None and st["workers"][0]["requests_total"] is None


def test_total_is_exact_across_workers_and_survives_a_killed_worker(supervisors):
    sup = supervisors(config={"workers": 2}).start()
    before = total(scrape(sup.metrics_url), "usersd_http_requests_total")
    k = 200
    pids = {}
    for _ in range(k):  # a fresh connection per request: SO_REUSEPORT spreads them over both workers
        r = http_request(sup.port)
        assert r.status == 200
        pids[r.json()["pid"]] = pids.get(r.json()["pid"], 0) + 1
    assert len(pids) == 2, f"one worker served everything: {pids}"
    # The counter is bumped just after the response is written: wait for the last ones (bounded), then exact.
    wait_until(lambda: total(scrape(sup.metrics_url), "usersd_http_requests_total") >= before + k, 5,
               message="all requests counted")
    after = total(scrape(sup.metrics_url), "usersd_http_requests_total")
    assert after == before + k
    st = sup.status()
    assert all(w["requests_total"] > 0 for w in st["workers"]), st["workers"]
    assert sum(w["requests_total"] for w in st["workers"]) == after

    victim = st["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: (lambda s: s and s["workers"][0]["pid"] not in (None, victim)
                        and s["workers"][0]["state"] == "online")(sup.try_status()), 15, message="slot 0 restarted")
    text = scrape(sup.metrics_url)
    assert total(text, "usersd_http_requests_total") == after, "a killed worker's counts were lost"
    assert total(text, "usersd_worker_restarts_total", slot="0") == 1
    assert total(text, "usersd_worker_up", slot="0") == 1
    # The restarted worker adds to the same totals.
    for _ in range(10):
        assert http_request(sup.port).status == 200
    wait_until(lambda: total(scrape(sup.metrics_url), "usersd_http_requests_total") == after + 10, 5,
               message="the restarted worker's requests counted")


def test_reloads_are_counted(supervisors):
    sup = supervisors(config={"workers": 1}).start()
    assert sup.ctl("reload").returncode == 0
    # The admin thread sees the supervisor's figures as of its last loop iteration: wait for it (bounded).
    wait_until(lambda: total(scrape(sup.metrics_url), "usersd_supervisor_reloads_total", result="ok") == 1, 5,
               message="the reload counted")
    assert sup.status()["supervisor"]["reloads"] == {"ok": 1, "failed": 0}
    done = sup.ctl("status")
    assert done.returncode == 0 and sup.metrics_url in done.stdout and "total" in done.stdout, done.stdout


def test_admin_port_in_use_is_a_startup_error(supervisors):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = supervisors(config={"workers": 1, "admin": {"port": port}})
        done = sup.start_daemon()
        assert done.returncode != 0 and "admin.port" in done.stderr and str(port) in done.stderr, done.stderr


# --- docs: the dashboard and the example queries --------------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def documented_queries():
    dashboard = json.loads((REPO / "docs" / "grafana-usersd.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    doc = (REPO / "docs" / "observability.md").read_text()
    block = re.search(r"```promql\n(.*?)```", doc, re.S)
    assert block, "docs/observability.md has no promql block"
    exprs += [line for line in block.group(1).splitlines() if line.strip()]
    # Grafana template variables are not PromQL: give them a value.
    return [e.replace("$instance", ".*") for e in exprs]


def test_dashboard_and_doc_queries_are_valid_promql_on_exported_metrics(server, tmp_path):
    queries = documented_queries()
    assert len(queries) >= 15
    rules = {"groups": [{"name": "docs", "rules": [{"record": f"usersd:doc_query_{i}", "expr": q}
                                                  for i, q in enumerate(queries)]}]}
    rules_file = tmp_path / "rules.json"  # YAML is a superset of JSON: promtool reads it
    rules_file.write_text(json.dumps(rules))
    done = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    requests.post(server.url("/v1/auth/login"), json={"email": "nobody@example.com", "password": "whatever pw"},
                  timeout=10)
    exported = set(re.findall(r"^# TYPE (\S+)", scrape(server.metrics_url), re.M))
    for q in queries:
        for name in re.findall(r"usersd_[a-z_]+", q):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in exported, f"{name} in {q!r} is not exported"
