"""The supervisor, driven as an operator would: real processes, signals, sockets and the CLI.

Every test gets its own directory and port (the `supervisors` fixture) and kills whatever usersd
process it left behind. Figures that matter to operations (replacement time, reload time, RSS) are
printed: run with `-s` to see them.
"""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid

import pytest

from supervisor_helpers import (BIN, NEXT_BIN, alive, children_of, connection_refused, copy_binary, cpu_seconds,
                                health, http_request, print_rss, probe_pids, processes_mentioning, port_is_free,
                                ps_children, read_response, supervisors, wait_until)  # noqa: F401 - fixture

PASSWORD = "correct horse battery"


def unique_email(prefix="sup"):
    return f"{prefix}{uuid.uuid4().hex[:12]}@example.com"


def register_body(email):
    return {"email": email, "password": PASSWORD, "firstName": "Sup", "lastName": "Test"}


def version_of(binary):
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def status_rows(text):
    """Rows of the `usersd status` table: {pid: state}."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].rstrip("*").isdigit() and parts[1].isdigit():
            rows[int(parts[1])] = parts[2]
    return rows


def no_usersd_left(sup):
    return not processes_mentioning(str(sup.tmp) + "/")


def reload_with_clients(sup, old_pids, new_version=None, clients=3, after=0.5):
    """`usersd reload` while `clients` threads keep opening fresh connections to /healthcheck. Returns
    (CompletedProcess, summary, bad) where bad lists requests *started after the CLI returned* that were not
    answered 200 by a new worker (with `new_version`, if given)."""
    records, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            t = time.monotonic()
            try:
                r = health(sup.port, timeout=3)
                doc = r.json()
                records.append((t, r.status, doc["pid"], doc["version"]))
            except Exception as e:  # noqa: BLE001
                records.append((t, None, None, repr(e)))

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        done = sup.ctl("reload")
        returned = time.monotonic()  # a request started after this started after `usersd reload` returned
        time.sleep(after)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    during = [r for r in records if t0 <= r[0] < returned]
    later = [r for r in records if r[0] >= returned]
    bad = [(round((r[0] - returned) * 1000, 1), *r[1:]) for r in later
           if r[1] != 200 or r[2] in old_pids or (new_version and r[3] != new_version)]
    summary = (f"CLI took {(returned - t0) * 1000:.0f} ms; requests during the reload: {len(during)} "
               f"({sum(r[1] is None for r in during)} failed), after it: {len(later)} ({len(bad)} not from a new "
               f"worker); tcp_migrate_req={sup.status()['supervisor']['tcp_migrate_req']}")
    assert len(later) >= 20, summary
    return done, summary, bad


# --- 1. workers come up and all serve -------------------------------------------------------------------

def test_workers_have_distinct_pids_all_serve_and_match_the_process_table(supervisors):
    sup = supervisors(config={"workers": 3}).start()
    st = sup.wait_online(3)
    pids = sup.worker_pids(st)
    assert len(set(pids)) == 3 and all(isinstance(p, int) and p > 0 for p in pids), st
    assert [w["slot"] for w in st["workers"]] == [0, 1, 2]
    assert st["supervisor"]["pid"] == sup.proc.pid
    assert st["supervisor"]["workers_target"] == 3 and st["supervisor"]["state"] == "running"
    assert st["supervisor"]["port"] == sup.port

    # Every worker serves: fresh connections are spread over the SO_REUSEPORT listeners.
    seen, versions, failures = probe_pids(sup.port, pids, timeout=15)
    assert not failures, failures[:5]
    assert set(seen) == set(pids), f"answered: {seen}, workers: {pids}"
    print(f"healthcheck answers per worker pid: {seen}")

    # status --json (the CLI) == the supervisor's children in ps and /proc, and they are workers.
    done = sup.ctl("status", "--json")
    assert done.returncode == 0, done.stderr
    cli_pids = {w["pid"] for w in json.loads(done.stdout)["workers"]}
    assert cli_pids == set(pids)
    assert ps_children(sup.proc.pid) == set(pids)
    assert children_of(sup.proc.pid) == set(pids)
    for pid in pids:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        assert b"worker" in cmd and b"--slot" in cmd, cmd

    # The text table lists each worker pid as online.
    done = sup.ctl("status")
    assert done.returncode == 0, done.stderr
    rows = status_rows(done.stdout)
    assert {pid: rows.get(pid) for pid in pids} == {pid: "online" for pid in pids}, done.stdout
    assert f"supervisor pid {sup.proc.pid}" in done.stdout

    # Idle RSS, once the supervisor has sampled every process (every second).
    wait_until(lambda: all(w["rss_bytes"] > 0 for w in sup.status()["workers"]), 5, interval=0.3)
    time.sleep(1.1)  # one more sample after the probing above: idle figures
    st = print_rss(sup, "idle, 3 workers")
    assert 0 < st["supervisor"]["rss_bytes"] < 200 * 1024 * 1024


# --- 2. kill -9 of a worker -------------------------------------------------------------------------------

def test_killed_worker_is_replaced_in_its_slot_while_the_service_keeps_answering(supervisors):
    sup = supervisors(config={"workers": 3}).start()
    st = sup.wait_online(3)
    before = {w["slot"]: w["pid"] for w in st["workers"]}
    victim = before[1]

    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    # Requests in flight on the victim at the instant of the kill are lost by definition; from the moment
    # it is dead (its listener closed), every request must be answered by the others or the replacement.
    wait_until(lambda: not alive(victim), 2, interval=0.002)
    ok, failures, replaced_at, new_pid = 0, [], None, None
    deadline = t0 + 15
    while time.monotonic() < deadline:
        try:
            r = health(sup.port, timeout=3)
            if r.status == 200:
                ok += 1
            else:
                failures.append(r)
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
        if replaced_at is None:
            slots = sup.online_from_log()
            if slots.get(1) not in (None, victim):
                replaced_at, new_pid = time.monotonic(), slots[1]
        elif time.monotonic() - replaced_at > 0.5:  # keep going a little with the replacement serving
            break
    assert replaced_at is not None, f"slot 1 not replaced within 15 s\n{sup.known_bug_hint()}{sup.log()[-3000:]}"
    print(f"kill -9 -> replacement online: {(replaced_at - t0) * 1000:.0f} ms; "
          f"{ok} requests answered during the replacement, {len(failures)} failed")
    assert not failures, failures[:5]
    assert ok > 0

    st = sup.wait_online(3)
    after = {w["slot"]: w for w in st["workers"]}
    assert after[1]["pid"] == new_pid != victim
    assert after[1]["restarts"] == 1, after[1]
    assert "SIGKILL" in (after[1]["last_exit"] or ""), after[1]
    for slot in (0, 2):
        assert after[slot]["pid"] == before[slot] and after[slot]["restarts"] == 0, (after[slot], sup.known_bug_hint())
    assert children_of(sup.proc.pid) == {w["pid"] for w in st["workers"]}
    seen, _, failures = probe_pids(sup.port, [new_pid], timeout=10)
    assert new_pid in seen and not failures


# --- 3. daemon mode ----------------------------------------------------------------------------------------

def test_daemon_start_status_stop_leaves_nothing_behind(supervisors):
    sup = supervisors(config={"workers": 2})
    t0 = time.monotonic()
    done = sup.start_daemon()
    started_in = time.monotonic() - t0
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{sup.log()[-3000:]}"
    m = re.search(rf"usersd started: supervisor pid (\d+), 2 workers on 127\.0\.0\.1:{sup.port}\b", done.stdout)
    assert m, done.stdout
    pid = int(m[1])
    sup.daemon_pid = pid
    print(f"daemon start returned in {started_in * 1000:.0f} ms: {done.stdout.strip()}")
    assert alive(pid)
    assert pid != os.getpid() and open(f"/proc/{pid}/stat").read().split(")")[1].split()[1] != str(os.getpid()), \
        "the daemon must not be our child"
    assert sup.pidfile.read_text().strip() == str(pid)

    # Ready when `start` returns: every worker answers at once.
    st = sup.wait_online(2, timeout=5)
    assert st["supervisor"]["pid"] == pid
    pids = sup.worker_pids(st)
    seen, _, failures = probe_pids(sup.port, pids, timeout=10)
    assert set(seen) == set(pids) and not failures
    done = sup.ctl("status")
    assert done.returncode == 0 and f"supervisor pid {pid}" in done.stdout, done.stdout + done.stderr

    done = sup.ctl("stop")
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert not alive(pid), "usersd stop returned while the supervisor is still running"
    assert not any(alive(p) for p in pids)
    assert no_usersd_left(sup), processes_mentioning(str(sup.tmp) + "/")
    assert port_is_free(sup.port)
    assert connection_refused(sup.port)
    assert not sup.pidfile.exists()
    assert not sup.socket_path.exists()
    # A second stop has nothing to talk to.
    done = sup.ctl("stop")
    assert done.returncode != 0 and "no usersd" in done.stderr, done.stderr


# --- 4. refusing to start twice ---------------------------------------------------------------------------

def test_second_start_is_refused_and_the_first_instance_is_untouched(supervisors):
    first = supervisors(config={"workers": 2}, name="first").start()
    st = first.wait_online(2)
    pids = sup_pids = sorted(first.worker_pids(st))

    # Same runtime dir (same config): the pidfile lock says no.
    done = subprocess.run([BIN, "start", "--config", str(first.config_path)], env=first.env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0, done.stdout
    assert "another usersd" in done.stderr, done.stderr
    assert str(first.proc.pid) in done.stderr, done.stderr
    print(f"same runtime dir: {done.stderr.strip()}")

    # Different runtime dir, same port: refused, in the daemon and in the foreground.
    other = supervisors(config={"workers": 1, "http": {"port": first.port}}, name="other")
    done = other.start_daemon()
    assert done.returncode != 0, done.stdout
    assert "in use" in done.stderr and str(first.port) in done.stderr, done.stderr
    print(f"same port: {done.stderr.strip()}")
    wait_until(lambda: no_usersd_left(other), 2, message="the refused supervisor to exit")
    other.start(wait_online=False)
    rc = other.proc.wait(20)
    assert rc != 0
    assert "in use" in other.log()
    assert no_usersd_left(other)

    # The first instance never noticed.
    assert first.proc.poll() is None
    assert sorted(first.worker_pids()) == sup_pids
    assert children_of(first.proc.pid) == set(pids)
    assert first.pidfile.read_text().strip() == str(first.proc.pid)
    seen, _, failures = probe_pids(first.port, pids, timeout=10)
    assert set(seen) == set(pids) and not failures


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain-listener", "so_reuseport-listener"])
def test_start_refuses_a_port_another_program_listens_on(supervisors, reuse_port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        if reuse_port:  # another SO_REUSEPORT server must not silently share the port with us
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        port = squatter.getsockname()[1]
        sup = supervisors(config={"workers": 1, "http": {"port": port}})
        done = sup.start_daemon()
        assert done.returncode != 0, f"{done.stdout}\n{sup.log()[-2000:]}"
        assert "in use" in done.stderr and str(port) in done.stderr, done.stderr
        wait_until(lambda: no_usersd_left(sup), 2, message="the refused supervisor to exit")
        # The squatter still owns the port.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


# --- 5. graceful stop ------------------------------------------------------------------------------------

def test_sigterm_finishes_a_slow_request_refuses_new_connections_and_exits_0(supervisors):
    graceful = 10
    sup = supervisors(config={"workers": 2, "graceful_timeout": graceful}).start()
    sup.wait_online(2)

    body = json.dumps(register_body(unique_email("slow"))).encode()
    head = (f"POST /v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1:{sup.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    pieces = [body[i:i + 20] for i in range(0, len(body), 20)]
    assert len(pieces) >= 4
    conn = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
    try:
        conn.sendall(head + pieces[0])
        # The request is in flight on some worker (heartbeats report it within a second).
        wait_until(lambda: any(w["in_flight"] >= 1 for w in sup.status()["workers"]), 3, interval=0.25,
                   message="the slow request to show up as in flight")

        t_term = time.monotonic()
        sup.proc.send_signal(signal.SIGTERM)
        # Listeners close at once (drain_delay 0) although our request is still unfinished.
        wait_until(lambda: connection_refused(sup.port), 2, interval=0.02, message="new connections refused")
        refused_after = time.monotonic() - t_term
        for piece in pieces[1:]:
            time.sleep(2.0 / (len(pieces) - 1))
            conn.sendall(piece)
        assert sup.proc.poll() is None, "the supervisor exited with a request in flight"
        response = read_response(conn)
    finally:
        conn.close()
    print(f"SIGTERM: new connections refused after {refused_after * 1000:.0f} ms; slow request answered "
          f"{response.status} {time.monotonic() - t_term:.2f} s after SIGTERM")
    assert response.status == 201, response
    assert response.headers.get("location", "").startswith("/v1/users/"), response.headers

    rc = sup.proc.wait(graceful)
    stopped_in = time.monotonic() - t_term
    print(f"supervisor exited {rc} {stopped_in:.2f} s after SIGTERM")
    assert rc == 0, sup.log()[-3000:]
    assert stopped_in < graceful
    assert connection_refused(sup.port)
    wait_until(lambda: no_usersd_left(sup), 2, message="no usersd process left")
    assert not sup.pidfile.exists() and not sup.socket_path.exists()


def test_response_finished_during_drain_says_connection_close(supervisors):
    """A keep-alive request that started before SIGTERM and ends during the drain: its response is the
    connection's last, so it must say `Connection: close` (the drain logic's own promise), or the client's
    next request on that connection meets a closed socket."""
    sup = supervisors(config={"workers": 1, "graceful_timeout": 10}).start()
    sup.wait_online(1)
    body = json.dumps(register_body(unique_email("ka"))).encode()
    head = (f"POST /v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1:{sup.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    conn = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
    try:
        conn.sendall(head + body[:10])
        wait_until(lambda: sup.status()["workers"][0]["in_flight"] >= 1, 3, interval=0.25,
                   message="the request to be in flight")
        sup.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: connection_refused(sup.port), 2, interval=0.02, message="the listener to close")
        conn.sendall(body[10:])
        response = read_response(conn)
        assert response.status == 201, response
        next_request_answered = None
        if response.headers.get("connection", "").lower() != "close":
            # What a keep-alive client does next: reuse the connection (after a short think time).
            time.sleep(0.3)
            try:
                conn.sendall(f"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1:{sup.port}\r\n\r\n".encode())
                next_request_answered = read_response(conn, timeout=3).status
            except OSError as e:
                next_request_answered = repr(e)
    finally:
        conn.close()
    assert response.headers.get("connection", "").lower() == "close", (
        f"the response completed during the drain has no 'Connection: close' ({response.headers}); the next "
        f"request on that keep-alive connection got: {next_request_answered}")
    assert sup.proc.wait(10) == 0


def test_drain_delay_fails_healthcheck_while_the_api_keeps_serving(supervisors):
    drain = 2
    sup = supervisors(config={"workers": 2, "drain_delay": drain, "graceful_timeout": 10}).start()
    sup.wait_online(2)
    email = unique_email("drain")
    assert http_request(sup.port, "POST", "/v1/auth/register", register_body(email)).status == 201
    r = http_request(sup.port, "POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    assert r.status == 200, r
    auth = {"Authorization": f"Bearer {r.json()['token']}"}

    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    first_503 = wait_until(lambda: (lambda r: r if r.status == 503 else None)(health(sup.port)), 1.0, interval=0.01,
                           message="/healthcheck to answer 503")
    health_off_after = time.monotonic() - t0
    checks = {"health": 0, "me": 0, "register": 0}
    failures = []
    while time.monotonic() - t0 < drain - 0.3:
        try:
            h = health(sup.port)
            if not (h.status == 503 and h.json().get("status") == "draining"
                    and h.headers.get("connection", "").lower() == "close"):
                failures.append(("health", h))
            checks["health"] += 1
            me = http_request(sup.port, "GET", "/v1/users/me", headers=auth)
            if me.status != 200 or me.json().get("email") != email:
                failures.append(("me", me))
            checks["me"] += 1
            reg = http_request(sup.port, "POST", "/v1/auth/register", register_body(unique_email("drain")))
            if reg.status != 201:
                failures.append(("register", reg))
            checks["register"] += 1
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
    wait_until(lambda: connection_refused(sup.port), drain + 2, interval=0.02, message="listeners to close")
    refused_after = time.monotonic() - t0
    print(f"drain_delay {drain}: healthcheck 503 after {health_off_after * 1000:.0f} ms, listeners closed after "
          f"{refused_after:.2f} s; during the drain: {checks}, {len(failures)} failures")
    assert first_503.json()["status"] == "draining"
    assert first_503.headers.get("connection", "").lower() == "close"
    assert not failures, failures[:5]
    assert min(checks.values()) >= 2, checks
    assert drain - 0.1 <= refused_after <= drain + 1.5
    assert sup.proc.wait(10) == 0
    wait_until(lambda: no_usersd_left(sup), 2, message="no usersd process left")


# --- 6. crash loop -----------------------------------------------------------------------------------------

def test_crash_loop_backs_off_cheaply_and_recovers(supervisors):
    sup = supervisors(config={"workers": 1}).start()
    st = sup.wait_online(1)
    first_pid = st["workers"][0]["pid"]

    # The store becomes unopenable: the data dir is now a regular file.
    shutil.rmtree(sup.data_dir)
    sup.data_dir.write_text("not a directory\n")
    t0 = time.monotonic()
    os.kill(first_pid, signal.SIGKILL)

    samples = []
    while time.monotonic() - t0 < 5.5:
        w = sup.status()["workers"][0]
        samples.append((time.monotonic() - t0, w["state"], w["restarts"], w.get("restart_in_ms"), w["last_exit"]))
        time.sleep(0.05)
    waiting = [s for s in samples if s[1] == "waiting-restart"]
    assert waiting, samples
    restarts = [s[2] for s in samples]
    assert restarts == sorted(restarts), "restarts went down"
    assert restarts[-1] >= 5, f"only {restarts[-1]} restarts in 5.5 s: {samples}"
    assert samples[-1][4] == "exit status 1", samples[-1]
    # Backoff: the delay announced after each failure grows (100 ms x 1.5 per failure, capped at 15 s).
    delay_by_restarts = {}
    for _, _, n, delay, _ in waiting:
        delay_by_restarts[n] = max(delay_by_restarts.get(n, 0), delay)
    delays = [delay_by_restarts[n] for n in sorted(delay_by_restarts)]
    print(f"crash loop: restarts after 5.5 s = {restarts[-1]}; announced delay (ms) by restart count: "
          f"{dict(sorted(delay_by_restarts.items()))}")
    assert delays == sorted(delays) and delays[-1] > delays[0], delay_by_restarts
    for n, delay in delay_by_restarts.items():
        assert delay <= 100 * 1.5 ** n + 50, (n, delay)
    assert delays[-1] >= 700
    assert sup.log().count("cannot open store") >= 3

    # The supervisor idles between attempts.
    pid = sup.proc.pid
    c0, w0 = cpu_seconds(pid), time.monotonic()
    time.sleep(3)
    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - w0) * 100
    print(f"supervisor CPU during the crash loop: {cpu:.2f}% of one core")
    assert cpu < 5

    # Repair the store: the next attempt succeeds and the slot is online again.
    sup.data_dir.unlink()
    sup.data_dir.mkdir()
    t_fix = time.monotonic()
    st = sup.wait_online(1, timeout=20)
    print(f"recovered {time.monotonic() - t_fix:.1f} s after the repair "
          f"(restarts {st['workers'][0]['restarts']}, last_exit {st['workers'][0]['last_exit']!r})")
    w = st["workers"][0]
    assert w["state"] == "online" and w["pid"] not in (None, first_pid)
    assert w["restarts"] >= restarts[-1]
    r = health(sup.port)
    assert r.status == 200 and r.json()["pid"] == w["pid"]


# --- 7. hung worker ---------------------------------------------------------------------------------------

def test_hung_worker_is_killed_after_worker_timeout_and_replaced(supervisors):
    timeout = 2
    sup = supervisors(config={"workers": 2, "worker_timeout": timeout}).start()
    st = sup.wait_online(2)
    victim, other = st["workers"][0]["pid"], st["workers"][1]["pid"]

    t0 = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    limit = timeout + 5 + 3
    new_pid = wait_until(lambda: (lambda p: p if p not in (None, victim) else None)(sup.online_from_log().get(0)),
                         limit, message=f"slot 0 to be replaced within {limit} s")
    replaced_in = time.monotonic() - t0
    wait_until(lambda: not alive(victim), 3, message="the stopped worker to be gone")
    print(f"SIGSTOPped worker replaced after {replaced_in:.2f} s (worker_timeout {timeout} s)")
    # The last heartbeat came up to 1 s (the heartbeat interval) before SIGSTOP.
    assert replaced_in >= timeout - 1, "replaced before worker_timeout passed"
    log = sup.log()
    assert "heartbeat" in log, log[-3000:]
    st = sup.wait_online(2)
    w0 = st["workers"][0]
    assert w0["pid"] == new_pid and w0["restarts"] == 1, w0
    assert "SIGABRT" in w0["last_exit"] or "SIGKILL" in w0["last_exit"], w0
    assert st["workers"][1]["pid"] == other, sup.known_bug_hint()
    seen, _, failures = probe_pids(sup.port, [new_pid, other], timeout=10)
    assert set(seen) == {new_pid, other} and not failures


# --- 8. supervisor killed ---------------------------------------------------------------------------------

def test_workers_die_with_a_killed_supervisor_and_the_port_is_freed(supervisors):
    sup = supervisors(config={"workers": 3}).start()
    pids = sup.worker_pids(sup.wait_online(3))
    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGKILL)
    sup.proc.wait(5)
    wait_until(lambda: not any(alive(p) for p in pids), 2, interval=0.02,
               message=f"workers {pids} to exit after the supervisor was killed")
    gone_in = time.monotonic() - t0
    wait_until(lambda: port_is_free(sup.port), 2, interval=0.02, message="the port to be free")
    print(f"supervisor SIGKILL: all workers gone after {gone_in * 1000:.0f} ms, port free after "
          f"{(time.monotonic() - t0) * 1000:.0f} ms")
    assert no_usersd_left(sup)
    # The stale pidfile does not block the next start (the lock, not the file, is what counts).
    assert sup.pidfile.exists()
    sup.start()
    sup.wait_online(3)
    assert sup.pidfile.read_text().strip() == str(sup.proc.pid)


# --- 9. sd_notify ------------------------------------------------------------------------------------------

def test_sd_notify_ready_watchdog_reloading_stopping_in_order(supervisors):
    sup = supervisors(config={"workers": 2})
    notify_path = sup.tmp / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify_path))
    rx.settimeout(0.1)
    sup.env.update({"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
    messages = []  # (time, {key: value}, extra)
    done = threading.Event()

    def receive():
        while not done.is_set():
            try:
                data = rx.recv(4096).decode()
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            extra = {}
            if fields.get("READY") == "1" and not any(m[1].get("READY") for m in messages):
                # At the first READY=1 every worker must already be serving.
                try:
                    extra["health"] = health(sup.port, timeout=2).status
                    extra["states"] = [w["state"] for w in sup.status()["workers"]]
                except Exception as e:  # noqa: BLE001
                    extra["health"] = repr(e)
            messages.append((time.monotonic(), fields, extra))

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        sup.start(wait_online=False)
        wait_until(lambda: any(m[1].get("READY") for m in messages), 20, message="READY=1")
        t_ready = time.monotonic()
        wait_until(lambda: time.monotonic() - t_ready > 2.2, 3)  # watchdog pings at half of WATCHDOG_USEC
        reload = sup.ctl("reload")
        assert reload.returncode == 0, reload.stderr
        time.sleep(0.3)
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(15) == 0
        time.sleep(0.2)
    finally:
        done.set()
        thread.join(2)
        rx.close()

    kinds = [next((k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG") if k in m[1]), "?") for m in messages]
    print(f"sd_notify messages: {kinds}")
    assert kinds and kinds[0] == "READY", kinds
    assert [k for k in kinds if k != "WATCHDOG"] == ["READY", "RELOADING", "READY", "STOPPING"], kinds
    first = messages[0]
    assert first[1]["READY"] == "1" and first[1].get("MAINPID") == str(sup.proc.pid), first
    assert first[2].get("health") == 200 and first[2].get("states") == ["online", "online"], first[2]
    reloading = messages[kinds.index("RELOADING")]
    assert reloading[1]["RELOADING"] == "1" and "MONOTONIC_USEC" in reloading[1], reloading
    assert all(m[1]["WATCHDOG"] == "1" for m, k in zip(messages, kinds) if k == "WATCHDOG")
    pings = [m[0] for m, k in zip(messages[:kinds.index("RELOADING")], kinds) if k == "WATCHDOG"]
    assert len(pings) >= 3, kinds
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    print(f"watchdog gaps (s): {[round(g, 2) for g in gaps]}")
    assert all(0.3 <= g <= 0.8 for g in gaps), gaps


# --- 10. deploying a new build ------------------------------------------------------------------------------

def test_reload_switches_every_worker_to_the_rebuilt_binary(supervisors):
    sup = supervisors(config={"workers": 3})
    installed = sup.tmp / "bin" / "usersd"
    copy_binary(BIN, installed)
    sup.binary = str(installed)
    old_version = version_of(BIN)
    assert old_version == "0.1.0"
    new_version = version_of(NEXT_BIN)
    assert new_version == old_version + "-next"

    sup.start()
    st = sup.wait_online(3)
    assert st["supervisor"]["binary"] == str(installed)
    old_pids = set(sup.worker_pids(st))
    seen, versions, failures = probe_pids(sup.port, old_pids, timeout=10)
    assert versions == {old_version} and set(seen) == old_pids and not failures

    copy_binary(NEXT_BIN, installed)  # the deploy: atomic rename over the running binary
    done, stats, bad = reload_with_clients(sup, old_pids, new_version)
    assert done.returncode == 0, done.stderr
    assert re.search(r"reloaded 3 workers in (\d+) ms", done.stdout), done.stdout
    print(f"reload onto the new build: {done.stdout.strip()}; {stats}")
    assert not bad, (f"{len(bad)} requests started after `usersd reload` returned were not answered by a new "
                     f"worker (ms after the return, status, pid, version): {bad[:10]}")
    st = sup.wait_online(3)
    new_pids = set(sup.worker_pids(st))
    assert not new_pids & old_pids
    for pid in new_pids:
        assert os.readlink(f"/proc/{pid}/exe") == str(installed)
    seen, versions, failures = probe_pids(sup.port, new_pids, timeout=10)
    assert set(seen) == new_pids and versions == {new_version} and not failures
    assert not any(alive(p) for p in old_pids)



def test_no_old_worker_answers_once_reload_has_returned(supervisors):
    """`usersd reload` returns when every worker was replaced: from then on no request may reach an old
    worker (deploy scripts check the version right after it). Several rounds, to catch the race."""
    sup = supervisors(config={"workers": 2}).start()
    pids = set(sup.worker_pids(sup.wait_online(2)))
    problems, durations = [], []
    for round_ in range(5):
        done, stats, bad = reload_with_clients(sup, pids, after=0.3)
        assert done.returncode == 0, done.stderr
        durations.append(int(re.search(r"in (\d+) ms", done.stdout)[1]))
        if bad:
            problems.append((round_, stats, bad[:5]))
        pids = set(sup.worker_pids(sup.wait_online(2)))
    print(f"5 reloads with 2 workers: {durations} ms; rounds where an old worker answered or a request failed "
          f"after the return: {len(problems)}")
    assert not problems, problems


# --- 11. invalid config on reload ---------------------------------------------------------------------------

def test_reload_with_an_invalid_config_changes_nothing(supervisors):
    sup = supervisors(config={"workers": 2}).start()
    st = sup.wait_online(2)
    pids = sorted(sup.worker_pids(st))
    good = sup.config_path.read_text()
    broken = json.loads(good)
    broken["bogus_reload_key"] = 1
    sup.config_path.write_text(json.dumps(broken))

    # Through the config file: the CLI itself refuses, naming the key.
    done = sup.ctl("reload")
    assert done.returncode != 0 and "bogus_reload_key" in done.stderr, done.stderr
    # Through the runtime dir only: the supervisor re-reads the file and refuses, naming the key.
    done = subprocess.run([BIN, "reload", "--runtime-dir", str(sup.runtime_dir)], env=sup.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0, done.stdout
    assert "bogus_reload_key" in done.stderr, done.stderr
    print(f"reload with a broken config: {done.stderr.strip()}")
    assert sorted(sup.worker_pids()) == pids

    # SIGHUP with the same broken file, then with a file that is not even JSON.
    for text in (json.dumps(broken), good[: len(good) // 2]):
        sup.config_path.write_text(text)
        refusals = sup.log().count("reload refused")
        sup.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: sup.log().count("reload refused") > refusals, 5, message="the reload to be refused")
    time.sleep(1.0)
    st = sup.wait_online(2)
    assert sorted(sup.worker_pids(st)) == pids and st["supervisor"]["state"] == "running"
    assert children_of(sup.proc.pid) == set(pids)
    seen, _, failures = probe_pids(sup.port, pids, timeout=10)
    assert set(seen) == set(pids) and not failures

    # With the config fixed, SIGHUP reloads: the refusals above were about the config, nothing else.
    sup.config_path.write_text(good)
    sup.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload finished" in sup.log(), 30, message="SIGHUP reload to finish")
    st = sup.wait_online(2)
    assert not set(sup.worker_pids(st)) & set(pids)


# --- 12. scale ---------------------------------------------------------------------------------------------

def test_scale_up_down_by_command_and_signals(supervisors):
    sup = supervisors(config={"workers": 3}).start()
    sup.wait_online(3)

    done = sup.ctl("scale", "+1")
    assert done.returncode == 0 and "4" in done.stdout, done.stderr
    st = sup.settled(4)  # `scale` returns when it is done: no waiting
    assert st, sup.try_status()
    assert st["supervisor"]["workers_target"] == 4
    assert children_of(sup.proc.pid) == set(sup.worker_pids(st))

    done = sup.ctl("scale", "-2")
    assert done.returncode == 0 and "2" in done.stdout, done.stderr
    st = sup.settled(2)
    assert st, sup.try_status()
    assert children_of(sup.proc.pid) == set(sup.worker_pids(st)), "scale -2 returned before the drained workers exited"

    sup.proc.send_signal(signal.SIGTTIN)
    st = sup.wait_online(3, timeout=10)
    assert st["supervisor"]["workers_target"] == 3
    sup.proc.send_signal(signal.SIGTTOU)
    st = sup.wait_online(2, timeout=10)
    assert st["supervisor"]["workers_target"] == 2
    pids = sup.worker_pids(st)

    for bad in ("0", "abc", "-5", "+1x"):
        done = sup.ctl("scale", bad)
        assert done.returncode != 0, (bad, done.stdout)
        assert done.stderr.strip(), bad
    st = sup.settled(2)
    assert st and sup.worker_pids(st) == pids
    seen, _, failures = probe_pids(sup.port, pids, timeout=10)
    assert set(seen) == set(pids) and not failures


# --- 13. max_requests ---------------------------------------------------------------------------------------

def test_max_requests_recycles_the_worker_without_failing_requests(supervisors):
    sup = supervisors(config={"workers": 1, "max_requests": 50}).start()
    first = sup.worker_pids(sup.wait_online(1))[0]
    answered_by, failures = [], []
    for _ in range(120):
        try:
            r = health(sup.port)
            if r.status == 200:
                answered_by.append(r.json()["pid"])
            else:
                failures.append(r)
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
        time.sleep(0.03)
    distinct = list(dict.fromkeys(answered_by))
    print(f"max_requests 50: 120 requests answered by pids {distinct} "
          f"({[answered_by.count(p) for p in distinct]}), {len(failures)} failures")
    assert not failures, failures[:5]
    assert len(distinct) >= 2, distinct
    st = sup.wait_online(1)
    w = st["workers"][0]
    assert w["pid"] != first
    assert w["restarts"] == 0 and w["last_exit"] is None, w  # a recycle is not a crash
    assert "max_requests" in sup.log()
    assert not alive(first)


# --- 14. runtime files ---------------------------------------------------------------------------------------

def test_control_socket_is_owner_only_and_pidfile_names_the_supervisor(supervisors):
    sup = supervisors(config={"workers": 1}).start()
    sup.wait_online(1)
    mode = os.stat(sup.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(stat.S_IMODE(mode))
    assert sup.pidfile.read_text() == f"{sup.proc.pid}\n"
    # The same pid the control socket reports.
    assert sup.status()["supervisor"]["pid"] == sup.proc.pid


# --- the control socket must not disturb the workers ------------------------------------------------------

def test_status_requests_leave_workers_alone(supervisors):
    """Monitoring polls `usersd status`; that must never cost a worker its life."""
    sup = supervisors(config={"workers": 3}).start()
    st = sup.wait_online(3)
    pids = sup.worker_pids(st)
    t0, calls = time.monotonic(), 0
    while time.monotonic() - t0 < 5:  # heartbeats arrive every second from each worker meanwhile
        sup.status()
        calls += 1
    time.sleep(0.5)
    st = sup.status()
    print(f"{calls} status requests in 5 s; workers now {[(w['pid'], w['state'], w['restarts']) for w in st['workers']]}")
    assert [w["pid"] for w in st["workers"]] == pids, sup.known_bug_hint()
    assert all(w["restarts"] == 0 for w in st["workers"]), st["workers"]
    assert "supervisor channel closed" not in sup.log(), sup.known_bug_hint()
