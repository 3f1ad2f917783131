"""Runs last (file name): every log file the integration suite produced — every usersd it started, supervisor
and workers, foreground and daemon — is searched for the passwords, tokens, password hashes (Argon2, legacy bcrypt) and secrets the suite
used. None may appear. The test also makes its own traffic with a fresh password and token first, so it
can fail even when run alone."""
import re
from pathlib import Path

import requests

from supervisor_helpers import supervisors  # noqa: F401 - fixture
from usersd_harness import TEST_SECRET

OWN_PASSWORD = "observability canary pw 7Q"
URL_PASSWORD = "url-canary-pw-9Z"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
ARGON2 = re.compile(r"\$argon2id?\$")
BCRYPT = re.compile(r"\$2[aby]\$\d\d\$")  # the Node.js service's hashes, imported or verified on login
PASSWORD_LITERAL = re.compile(r"""(?:"password": |password=|PASSWORD = )"([^"]+)\"""")


def suite_passwords():
    """Password literals in the test sources, long and distinctive enough not to occur by chance."""
    found = set()
    for source in Path(__file__).parent.glob("*.py"):
        for value in PASSWORD_LITERAL.findall(source.read_text()):
            if len(value) >= 8 and len(set(value)) > 2 and "'" not in value:
                found.add(value)
    return found | {OWN_PASSWORD, URL_PASSWORD, "s3cretpw", "hunter2secret"}


def make_traffic(sup):
    base = sup.base
    assert sup.register("canary@example.com", password=OWN_PASSWORD).status_code == 201
    token = sup.login("canary@example.com", password=OWN_PASSWORD)
    auth = {"Authorization": f"Bearer {token}", "Cookie": f"session={token}"}
    assert requests.get(base + "/v1/users/me", headers=auth, timeout=5).status_code == 200
    requests.get(base + "/nope", headers=auth, timeout=5)
    requests.delete(base + "/healthcheck", headers=auth, timeout=5)
    requests.get(base + "/v1/users/me", headers={"Authorization": f"JWT {token}x"}, timeout=5)
    requests.post(base + "/v1/auth/login", json={"email": "canary@example.com", "password": OWN_PASSWORD + "!"},
                  timeout=10)
    requests.post(base + "/v1/auth/login", data=b'{"password": "' + OWN_PASSWORD.encode() + b'"',
                  headers={"Content-Type": "application/json"}, timeout=10)
    return token


def test_logs_hold_no_secrets(supervisors, tmp_path_factory):
    sup = supervisors(config={"workers": 2}).start()
    token = make_traffic(sup)
    sup.stop()
    # A store URL with credentials that cannot be reached: the failure is logged, the password is not.
    broken = supervisors(config={"workers": 1, "storage": {"url": f"mongodb://app:{URL_PASSWORD}@127.0.0.1:1/usersd",
                                                           "server_selection_timeout_ms": 200}}, name="broken")
    assert broken.start_daemon().returncode != 0

    secrets = suite_passwords() | {TEST_SECRET, token}
    logs = [p for p in Path(tmp_path_factory.getbasetemp()).rglob("*.log")
            if p.is_file() and not p.name.startswith("ferretdb")]
    scanned_access_lines = 0
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        scanned_access_lines += text.count('"msg":"access"')
        for secret in secrets:
            if secret in text:
                leaks.append(f"{path}: {secret!r}")
        for pattern in (JWT, ARGON2, BCRYPT):
            if m := pattern.search(text):
                leaks.append(f"{path}: {m.group(0)!r}")
    assert scanned_access_lines > 0 and any("broken" in str(p) for p in logs), [str(p) for p in logs]
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks)
    print(f"scanned {len(logs)} log files ({scanned_access_lines} access lines) for {len(secrets)} secrets")
