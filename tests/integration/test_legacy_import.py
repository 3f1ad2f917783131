"""`usersd import-legacy`: the Node.js service's MongoDB data (written as Mongoose did, in FerretDB) into
usersd, then every old account logs in with its old password and is upgraded to Argon2id.

Needs the session FerretDB: runs in the `--store=mongodb` pass of `make integration-test` (MONGO_SUITES),
where the usersd under test stores its users in MongoDB too. Without FerretDB these tests fail, never skip.
"""
import json
import os
import re
import subprocess
import time

import pytest
import requests

from legacy_fixtures import database, write_scenario
from usersd_harness import BIN, Server, TEST_SECRET

LOGIN_FAILED = None  # the 401 body for an unknown email, filled by the first test that asks


def _cli(*args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSD_")}
    env["USERSD_JWT_SECRET"] = TEST_SECRET
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, timeout=300, env=env)


def _summary(stdout):
    """The summary's counters: {"imported": 7, "refreshed": 0, ...} (the first number on each line)."""
    counts = {}
    for line in stdout.split("summary", 1)[1].splitlines():
        m = re.match(r"\s+(\w+):\s+(\d+)", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def _export(store_url):
    done = _cli("export", "--store", store_url)
    assert done.returncode == 0, done.stderr
    return {json.loads(line)["id"]: json.loads(line) for line in done.stdout.splitlines()}


def _verdict(response):
    """A problem body without its requestId (which names the request, not the outcome)."""
    body = response.json()
    body.pop("requestId", None)
    return body


def _login(server, email, password):
    return requests.post(server.url("/v1/auth/login"), json={"email": email, "password": password}, timeout=30)


@pytest.fixture
def legacy(store_backend):
    assert store_backend is not None, "import-legacy needs FerretDB: run with --store=mongodb (make integration-test)"
    name = f"legacy_{int(time.time() * 1000)}"
    client, db = database(store_backend.database_url(name))
    expected = write_scenario(db)
    yield store_backend.database_url(name), expected
    client.drop_database(name)
    client.close()


def test_import_legacy_keeps_every_password_id_and_link(tmp_path, legacy):
    legacy_url, exp = legacy
    server = Server(tmp_path, config={"workers": 1})
    store = server.store_url
    assert store.startswith("mongodb://"), "the usersd under test stores in MongoDB in this pass"

    # --dry-run: the full report, nothing written.
    dry = _cli("import-legacy", "--from", legacy_url, "--store", store, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout
    assert _summary(dry.stdout)["imported"] == 8
    assert _export(store) == {}

    done = _cli("import-legacy", "--from", legacy_url, "--store", store)
    assert done.returncode == 0, done.stderr + done.stdout
    counts = _summary(done.stdout)
    assert counts["read"] == exp.accounts
    assert f"{exp.accounts} authusers, {exp.directory} users" in done.stdout
    assert counts["merged"] == 1
    assert counts["imported"] == 8 and counts["refreshed"] == 0 and counts["unchanged"] == 0
    assert counts["skipped"] == len(exp.skipped_ids)
    for raw_id, kind in exp.skipped_ids.items():  # every loser and invalid record is named with its id
        assert re.search(rf"^{kind} \w+ {raw_id}: ", done.stdout, re.M), (raw_id, done.stdout)

    exported = _export(store)
    assert len(exported) == 8
    for user_id, fields in exp.users.items():
        line = exported[user_id]
        for key, value in fields.items():
            if key == "createdAt":
                assert line["createdAt"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value / 1000)) + \
                    ".%03dZ" % (value % 1000), (user_id, line)
            elif value is None:
                assert key not in line, (user_id, key, line)
            else:
                assert line[key] == value, (user_id, key, line)
    for email, (_, user_id) in exp.logins.items():
        assert exported[user_id]["passwordHash"].startswith("$2b$10$"), exported[user_id]
    for user_id in exp.no_password:
        assert exported[user_id]["passwordHash"] == ""

    server.start()
    try:
        unknown = _login(server, "nobody-at-all@example.com", "some password")
        assert unknown.status_code == 401
        for email, (password, user_id) in exp.logins.items():
            first = _login(server, email.upper(), password)  # emails match ignoring case, as before
            assert first.status_code == 200, (email, first.text)
            token = first.json()["token"]
            me = requests.get(server.url("/v1/users/me"), headers={"Authorization": f"JWT {token}"}, timeout=10)
            assert me.status_code == 200 and me.json()["id"] == user_id, me.text
        for email, password in exp.rejected_logins.items():
            r = _login(server, email, password)
            assert r.status_code == 401 and _verdict(r) == _verdict(unknown), r.text
        after_first = _export(store)
        for email, (password, user_id) in exp.logins.items():
            assert after_first[user_id]["passwordHash"].startswith("$argon2id$"), after_first[user_id]
            second = _login(server, email, password)  # now through Argon2id
            assert second.status_code == 200, second.text

        # Every old directory record is reachable at its old id, and accounts without a password
        # answer exactly as an unknown email does.
        token = _login(server, "grace@example.com", "cobol-1959").json()["token"]
        for user_id in exp.users:
            r = requests.get(server.url(f"/v1/users/{user_id}"), headers={"Authorization": f"JWT {token}"}, timeout=10)
            assert r.status_code == 200, (user_id, r.text)
        for user_id in exp.no_password:
            email = after_first[user_id]["email"]
            r = _login(server, email, "")
            assert r.status_code in (400, 401)
            r = _login(server, email, "any password at all")
            assert r.status_code == 401 and _verdict(r) == _verdict(unknown), r.text

        # An admin gives a directory-only user a password; then it logs in.
        dir_only = next(u for u in exp.no_password if exp.users.get(u, {}).get("lastName") == "Only")
        set_pw = server.cli("user", "set-password", "--config", str(server.config_path), "--email",
                            "DIR.ONLY@example.com", input_text="a brand new password\n")
        assert set_pw.returncode == 0 and set_pw.stdout.strip() == dir_only, set_pw.stderr
        assert _login(server, "dir.only@example.com", "a brand new password").status_code == 200
    finally:
        server.stop()

    # Running the import again changes nothing: users upgraded or edited in usersd are kept as they are.
    before = _export(store)
    again = _cli("import-legacy", "--from", legacy_url, "--store", store)
    assert again.returncode == 0, again.stderr
    counts = _summary(again.stdout)
    assert counts["imported"] == 0 and counts["refreshed"] == 0
    assert counts["unchanged"] + counts["kept"] == 8
    assert _export(store) == before


def test_import_legacy_catches_up_with_the_old_service_and_refuses_its_own_database(tmp_path, legacy, store_backend):
    legacy_url, exp = legacy
    store = store_backend.database_url(f"target_{int(time.time() * 1000)}")
    assert _cli("import-legacy", "--from", legacy_url, "--store", store).returncode == 0

    # The Node service keeps taking writes until the cut-over: a new account and an edited record.
    client, db = database(legacy_url)
    try:
        db.authusers.insert_one({"userName": "late.comer", "email": "late@example.com", "__v": 0,
                                 "hashPassword": write_hash(), "create_at": db.users.find_one()["create_at"]})
        grace = db.authusers.find_one({"email": "grace@example.com"})
        db.authusers.update_one({"_id": grace["_id"]}, {"$set": {"userName": "grace.b.hopper"}})
    finally:
        client.close()
    caught_up = _cli("import-legacy", "--from", legacy_url, "--store", store)
    assert caught_up.returncode == 0, caught_up.stderr
    counts = _summary(caught_up.stdout)
    assert counts["imported"] == 1 and counts["refreshed"] == 1, caught_up.stdout
    exported = _export(store)
    assert exported[str(grace["_id"])]["userName"] == "grace.b.hopper"
    assert any(line["email"] == "late@example.com" for line in exported.values())

    same_db = _cli("import-legacy", "--from", legacy_url, "--store", legacy_url)
    assert same_db.returncode != 0 and "another database" in same_db.stderr
    no_db = _cli("import-legacy", "--from", store_backend.url, "--store", store)
    assert no_db.returncode != 0 and "must name" in no_db.stderr


def write_hash():
    from legacy_fixtures import bcrypt_hash
    return bcrypt_hash("late password")
