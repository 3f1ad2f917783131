"""Login and registration throttling, shared by every worker of one instance, and the bounded Argon2 gate.

Each test starts its own server with small limits (the harness raises the production ones for the other
suites, whose clients are all 127.0.0.1). Locks last a few seconds; tests wait them out rather than fake time.
"""
import concurrent.futures
import json
import os
import signal
import uuid

import pytest
import requests

from supervisor_helpers import Supervisor, probe_pids, supervisors, wait_until  # noqa: F401 - fixture
from usersd_harness import assert_problem

PASSWORD = "correct horse battery"
WRONG = "not the password"


def login(server, email, password, headers=None):
    # A fresh connection per request: SO_REUSEPORT spreads them over the workers.
    return requests.post(server.url("/v1/auth/login"), json={"email": email, "password": password},
                         headers={"Connection": "close", **(headers or {})}, timeout=15)


def register(server, email, headers=None):
    body = {"email": email, "password": PASSWORD, "firstName": "Reg", "lastName": "User"}
    return requests.post(server.url("/v1/auth/register"), json=body, headers={"Connection": "close", **(headers or {})},
                         timeout=15)


def email():
    return f"t{uuid.uuid4().hex[:12]}@example.com"


def limits(per_account=None, per_address=None, register=None):
    """A limits section: the given rules, and the others out of the way."""
    loose = {"max_attempts": 100000, "window_seconds": 60, "lockout_seconds": 1, "max_lockout_seconds": 1}
    return {"login": {"per_account": per_account or loose, "per_address": per_address or loose},
            "register": {"per_address": register or loose}}


def rule(max_attempts, lockout=3, window=60, max_lockout=None):
    return {"max_attempts": max_attempts, "window_seconds": window, "lockout_seconds": lockout,
            "max_lockout_seconds": max_lockout or lockout}


def assert_throttled(response, max_seconds):
    assert_problem(response, 429)
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= max_seconds, response.headers
    return retry


def start(supervisors, workers=2, **config):
    sup = supervisors(config={"workers": workers, **config}).start()
    sup.wait_online(n=workers)
    return sup


def test_failed_logins_lock_the_account_on_every_worker_until_the_lock_expires(supervisors):
    sup = start(supervisors, limits=limits(per_account=rule(3, lockout=3)))
    # Both workers take fresh connections, so the counts below are spread over both of them.
    seen, _, failures = probe_pids(sup.port, sup.worker_pids())
    assert len(seen) == 2 and not failures, (seen, failures)
    user = email()
    sup.add_user(user, PASSWORD)
    for _ in range(3):
        assert_problem(login(sup, user, WRONG), 401)
    # Locked everywhere: a per-worker count would let about half of these through.
    for _ in range(12):
        assert_throttled(login(sup, user, PASSWORD), 3)
    wait_until(lambda: login(sup, user, PASSWORD).status_code == 200, timeout=10, interval=0.5,
               message="the lock to expire")


def test_an_unknown_email_is_throttled_like_a_known_one(supervisors):
    sup = start(supervisors, workers=1, limits=limits(per_account=rule(2, lockout=30)))
    known, unknown = email(), email()
    sup.add_user(known, PASSWORD)
    for who in (known, unknown):
        for _ in range(2):
            assert_problem(login(sup, who, WRONG), 401)
    a, b = login(sup, known, WRONG), login(sup, unknown, WRONG)
    assert_throttled(a, 30)
    assert_throttled(b, 30)
    assert a.json().keys() == b.json().keys() and a.json()["detail"].split(";")[0] == b.json()["detail"].split(";")[0]


def test_a_successful_login_clears_the_accounts_failures(supervisors):
    sup = start(supervisors, workers=1, limits=limits(per_account=rule(3, lockout=30)))
    user = email()
    sup.add_user(user, PASSWORD)
    for _ in range(5):
        assert_problem(login(sup, user, WRONG), 401)
        assert_problem(login(sup, user, WRONG), 401)
        assert login(sup, user, PASSWORD).status_code == 200


def test_failures_per_address_lock_every_account_from_that_address(supervisors):
    sup = start(supervisors, limits=limits(per_address=rule(4, lockout=30)))
    victim = email()
    sup.add_user(victim, PASSWORD)
    for _ in range(4):
        assert_problem(login(sup, email(), WRONG), 401)  # spraying: a different account each time
    assert_throttled(login(sup, victim, PASSWORD), 30)


def test_rotating_x_forwarded_for_gains_nothing_without_trusted_proxies(supervisors):
    sup = start(supervisors, limits=limits(per_address=rule(3, lockout=30)))
    for i in range(3):
        assert_problem(login(sup, email(), WRONG, {"X-Forwarded-For": f"198.51.100.{i + 1}"}), 401)
    for i in range(5):
        assert_throttled(login(sup, email(), WRONG, {"X-Forwarded-For": f"203.0.113.{i + 1}"}), 30)


def test_behind_a_trusted_proxy_only_the_address_it_appended_counts(supervisors):
    sup = start(supervisors, limits=limits(per_address=rule(3, lockout=30)),
                http={"trusted_proxies": ["127.0.0.1"]})
    attacker = "198.51.100.77"
    # The client forges the left part; the proxy (us, 127.0.0.1) appended the real address on the right.
    for i in range(3):
        assert_problem(login(sup, email(), WRONG, {"X-Forwarded-For": f"10.9.8.{i}, {attacker}"}), 401)
    for i in range(4):
        assert_throttled(login(sup, email(), WRONG, {"X-Forwarded-For": f"192.0.2.{i}, {attacker}"}), 30)
    # Another client behind the same proxy is not affected.
    other = email()
    sup.add_user(other, PASSWORD)
    assert login(sup, other, PASSWORD, {"X-Forwarded-For": "203.0.113.9"}).status_code == 200


def test_registration_is_throttled_per_address(supervisors):
    sup = start(supervisors, limits=limits(register=rule(3, lockout=30, window=600)))
    for _ in range(3):
        assert register(sup, email()).status_code == 201
    gone = email()
    assert_throttled(register(sup, gone), 30)
    assert_problem(login(sup, gone, PASSWORD), 401)  # nothing was created


def test_a_lock_survives_a_worker_restart(supervisors):
    sup = start(supervisors, workers=1, limits=limits(per_account=rule(2, lockout=60)))
    user = email()
    sup.add_user(user, PASSWORD)
    for _ in range(2):
        assert_problem(login(sup, user, WRONG), 401)
    [old] = sup.worker_pids()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (st := sup.settled(1)) and sup.worker_pids(st) != [old], timeout=20,
               message="a replacement worker")
    assert_throttled(login(sup, user, PASSWORD), 60)


def test_saturated_password_hashing_answers_503_with_retry_after(supervisors):
    # One Argon2 slot, no queue: of many simultaneous logins some must be turned away at once.
    sup = start(supervisors, workers=1, password={"max_concurrent_hashes": 1, "max_queued_hashes": 0},
                limits=limits())
    user = email()
    sup.add_user(user, PASSWORD)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: login(sup, user, PASSWORD), range(32)))
    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {200, 503}, codes
    busy = [r for r in responses if r.status_code == 503]
    assert busy, "no request was refused although only one hash may run at a time"
    for r in busy:
        assert_problem(r, 503)
        assert int(r.headers["Retry-After"]) >= 1
    assert any(r.status_code == 200 for r in responses)
    assert login(sup, user, PASSWORD).status_code == 200  # nothing stuck afterwards


@pytest.mark.parametrize("key, value", [
    ("limits.login.per_account.max_attempts", 0),
    ("limits.login.per_address.window_seconds", -1),
    ("limits.register.per_address.lockout_seconds", "ten"),
    ("limits.table_entries", 1),
    ("password.max_queued_hashes", -1),
    ("http.header_timeout", 0),
    ("http.max_connections_per_client", 0),
])
def test_bad_limits_config_is_one_line_naming_the_key(tmp_path, key, value):
    from usersd_harness import Server
    parts = key.split(".")
    section = {}
    node = section
    for part in parts[1:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    srv = Server(tmp_path, config={parts[0]: section} if len(parts) > 1 else {key: value})
    done = srv.cli("config", "check", "--config", str(srv.config_path))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], done.stderr


def test_lockout_must_not_exceed_its_cap(tmp_path):
    from usersd_harness import Server
    srv = Server(tmp_path, config={"limits": {"login": {"per_account": {"lockout_seconds": 600,
                                                                        "max_lockout_seconds": 60}}}})
    done = srv.cli("config", "check", "--config", str(srv.config_path))
    assert done.returncode != 0 and "limits.login.per_account.max_lockout_seconds" in done.stderr


def test_production_defaults_are_on(tmp_path):
    from usersd_harness import Server
    srv = Server(tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    done = srv.cli("config", "check", "--config", str(empty))  # built-in defaults only
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["limits"]["login"]["per_account"]["max_attempts"] <= 10
    assert effective["limits"]["login"]["per_address"]["max_attempts"] <= 100
    assert effective["limits"]["register"]["per_address"]["max_attempts"] <= 50
    assert effective["http"]["max_connections_per_client"] <= 64
