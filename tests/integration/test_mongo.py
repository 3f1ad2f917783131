"""MongoDB store against a real MongoDB-wire server (FerretDB): the store contract, outages, export/import.

Runs in the `--store=mongodb` pass of `make integration-test` (the session FerretDB is `store_backend`).
"""
import json
import os
import subprocess
import time
from pathlib import Path

import requests

from ferretdb import FerretDB
from usersd_harness import BIN, Server, assert_problem

ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = ROOT / "build" / "unit_tests"


def test_store_contract_suite_passes_on_mongodb(store_backend):
    assert store_backend is not None, "run with --store=mongodb (make integration-test does)"
    env = dict(os.environ, USERSD_TEST_MONGODB_URL=store_backend.url)
    done = subprocess.run([str(UNIT_TESTS), "-ts=mongo"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Status: SUCCESS" in done.stdout


def _until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def test_outage_gives_503_within_the_timeout_and_recovers_without_restart(tmp_path):
    ferret = FerretDB(tmp_path / "ferret").start()
    (tmp_path / "usersd").mkdir()
    server = Server(tmp_path / "usersd", config={"workers": 2, "storage": {"url": ferret.database_url("outage")}})
    server.start()
    try:
        assert server.register("outage@example.com").status_code == 201
        token = server.login("outage@example.com")
        me = server.url("/v1/users/me")
        assert requests.get(me, headers=server.auth(token), timeout=10).status_code == 200

        ferret.stop()
        started = time.monotonic()
        r = requests.get(me, headers=server.auth(token), timeout=15)
        time_to_503 = time.monotonic() - started
        assert_problem(r, 503)
        assert time_to_503 < 5, f"API answered 503 only after {time_to_503:.2f}s"
        health = requests.get(server.url("/healthcheck"), timeout=15)
        assert health.status_code == 503 and health.json()["store"] == "unavailable"
        r = requests.post(server.url("/v1/auth/login"), json={"email": "outage@example.com", "password": "x" * 10},
                          timeout=15)
        assert_problem(r, 503)
        print(f"\ntime to 503 after the database stopped: {time_to_503 * 1000:.0f} ms")

        ferret.start()  # same port, same data directory
        restarted = time.monotonic()
        recovered = _until(lambda: requests.get(me, headers=server.auth(token), timeout=15).status_code == 200, 30)
        assert recovered, "the API did not recover after the database came back"
        print(f"time to recover after the database came back: {(time.monotonic() - restarted) * 1000:.0f} ms")
        assert requests.get(server.url("/healthcheck"), timeout=10).status_code == 200
        status = json.loads(server.cli("status", "--json", "--config", str(server.config_path)).stdout)
        assert all(w["restarts"] == 0 for w in status["workers"]), status  # recovered in place, no restarts
    finally:
        server.stop()
        ferret.stop()


def _cli(*args, stdin=None, env=None):
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, USERSD_JWT_SECRET="x" * 40, **(env or {})))


def test_export_from_sqlite_import_into_mongodb_keeps_every_login(tmp_path, store_backend):
    sqlite_url = f"sqlite://{tmp_path}/source.db"
    mongo_url = store_backend.database_url(f"imported_{int(time.time() * 1000)}")
    (tmp_path / "source").mkdir()
    source = Server(tmp_path / "source", config={"storage": {"url": sqlite_url}, "workers": 1})
    source.start()
    emails = [f"user{i}@example.com" for i in range(12)]
    try:
        for i, email in enumerate(emails):
            extra = {"phone": "+64 21 555 01%02d" % i} if i % 2 else {}
            assert source.register(email, password=f"password-{i}!", **extra).status_code == 201
    finally:
        source.stop()

    exported = _cli("export", "--store", sqlite_url)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert len(lines) == len(emails)
    assert all("$argon2id$" in json.loads(line)["passwordHash"] for line in lines)

    imported = _cli("import", "--store", mongo_url, stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    again = _cli("import", "--store", mongo_url, stdin=exported.stdout)
    assert again.returncode == 0, again.stderr  # idempotent
    round_trip = _cli("export", "--store", mongo_url)
    assert sorted(round_trip.stdout.splitlines()) == sorted(lines)  # lossless, nothing duplicated

    (tmp_path / "target").mkdir()
    target = Server(tmp_path / "target", config={"storage": {"url": mongo_url}, "workers": 2})
    target.start()
    try:
        for i, email in enumerate(emails):
            token = target.login(email, password=f"password-{i}!")
            me = requests.get(target.url("/v1/users/me"), headers=target.auth(token), timeout=10).json()
            assert me["id"] == json.loads(lines[[json.loads(l)["email"] for l in lines].index(email)])["id"]
    finally:
        target.stop()


def test_import_with_a_bad_line_names_it_and_writes_nothing(tmp_path, store_backend):
    mongo_url = store_backend.database_url(f"bad_import_{int(time.time() * 1000)}")
    good = {"id": "6b1300000000000000000001", "email": "a@example.com", "firstName": "A", "lastName": "B",
            "role": "user", "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "createdAt": "2026-12-04T10:00:00.000Z", "updatedAt": "2026-12-04T10:00:00.000Z", "version": 1}
    bad = dict(good, id="6b1300000000000000000002", email="not an email")
    text = json.dumps(good) + "\n" + json.dumps(bad) + "\n"
    done = _cli("import", "--store", mongo_url, stdin=text)
    assert done.returncode != 0
    assert "line 2" in done.stderr and "email" in done.stderr, done.stderr
    assert _cli("export", "--store", mongo_url).stdout == ""


def test_credentials_in_the_store_url_are_redacted(tmp_path):
    url = "mongodb://app:hunter2secret@127.0.0.1:1/usersd?serverSelectionTimeoutMS=300"
    done = _cli("config", "check", env={"USERSD_STORAGE_URL": url})
    assert done.returncode == 0, done.stderr
    assert "hunter2secret" not in done.stdout and "app:****@" in done.stdout
    failed = _cli("export", "--store", url)
    assert failed.returncode != 0
    assert "hunter2secret" not in failed.stderr + failed.stdout, failed.stderr
