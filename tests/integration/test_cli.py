"""The usersd command line: --version, --help, `config check` (layering, validation, redaction),
`start` flag errors, and `user add`.

Config errors must exit non-zero with exactly one line on stderr that names the offending key.
"""
import json
import os
import re
import subprocess
import uuid

import pytest
import requests

from usersd_harness import BIN, TEST_SECRET, require_binary

PASSWORD = "correct horse battery"


# --- helpers ------------------------------------------------------------------------------------------

def base_env(secret=True, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSD_")}
    if secret:
        env["USERSD_JWT_SECRET"] = TEST_SECRET
    env.update(extra)
    return env


def run(*args, env=None, input_text=None, timeout=30):
    require_binary()
    return subprocess.run([BIN, *args], env=env if env is not None else base_env(), input=input_text,
                          capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path, doc, name="usersd.json"):
    """Writes a config file; dicts get data_dir/runtime_dir under tmp_path unless they set them."""
    path = tmp_path / name
    if isinstance(doc, dict):
        doc = {"data_dir": str(tmp_path / "data"), "runtime_dir": str(tmp_path / "run"), **doc}
        path.write_text(json.dumps(doc))
    else:
        path.write_text(doc)
    return path


def check(tmp_path, doc=None, env=None):
    path = write_config(tmp_path, doc if doc is not None else {})
    return run("config", "check", "--config", str(path), env=env)


def effective(done):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_error_line(done, *needles):
    assert done.returncode != 0, f"exit 0:\n{done.stdout}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{done.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def unique_email(prefix="cli"):
    return f"{prefix}{uuid.uuid4().hex[:16]}@example.com"


def user_add(config_path, email, password=PASSWORD, admin=False, first="Cli", last="User", env=None):
    args = ["user", "add", "--config", str(config_path), "--email", email, "--first-name", first, "--last-name", last]
    if admin:
        args.append("--admin")
    return run(*args, input_text=password + "\n", env=env)


# --- --version and --help -----------------------------------------------------------------------------

def test_version():
    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+\.\d+\.\d+", done.stdout), done.stdout
    assert "usersd" in done.stdout.lower()


def test_version_matches_healthcheck(server):
    version = re.search(r"\d+\.\d+\.\d+\S*", run("--version").stdout).group(0)
    health = requests.get(server.url("/healthcheck"), timeout=10).json()
    assert health["version"] == version


@pytest.mark.parametrize("args,mentions", [
    (["--help"], ["start", "config", "user"]),
    (["start", "--help"], ["--config", "--port", "--foreground"]),
    (["config", "check", "--help"], ["--config"]),
    (["user", "add", "--help"], ["--email", "--first-name", "--last-name", "--admin"]),
])
def test_help(args, mentions):
    done = run(*args)
    assert done.returncode == 0, done.stderr
    for word in mentions:
        assert word in done.stdout, (word, done.stdout)


@pytest.mark.parametrize("args", [[], ["nonsense"], ["config"], ["user"], ["start", "--no-such-flag"]])
def test_bad_invocations_exit_non_zero(args):
    done = run(*args, timeout=20)
    assert done.returncode != 0


# --- config check -------------------------------------------------------------------------------------

def test_config_check_prints_effective_config_with_secret_redacted(tmp_path):
    done = check(tmp_path, {"http": {"port": 5555}, "registration_enabled": False})
    cfg = effective(done)
    assert cfg["http"]["port"] == 5555
    assert cfg["registration_enabled"] is False
    assert cfg["data_dir"] == str(tmp_path / "data")
    assert "redacted" in cfg["jwt"]["secret"].lower()
    assert TEST_SECRET not in done.stdout and TEST_SECRET not in done.stderr
    assert cfg["storage"]["url"].startswith("sqlite://")


def test_config_check_never_prints_secret_from_file(tmp_path):
    secret = "file-secret-" + uuid.uuid4().hex + "-abcdefghijklmnop"
    secret_path = tmp_path / "jwt.secret"
    secret_path.write_text(secret + "\n")
    done = check(tmp_path, {"jwt": {"secret_file": str(secret_path)}}, env=base_env(secret=False))
    cfg = effective(done)
    assert "redacted" in cfg["jwt"]["secret"].lower()
    assert secret not in done.stdout and secret not in done.stderr


def test_config_check_redacts_store_password(tmp_path):
    done = check(tmp_path, {"storage": {"url": "mongodb://app:s3cretpw@db.example.com:27017/users"}})
    cfg = effective(done)
    assert "s3cretpw" not in done.stdout and "s3cretpw" not in done.stderr
    assert "db.example.com" in cfg["storage"]["url"]


def test_config_check_uses_usersd_config_env(tmp_path):
    path = write_config(tmp_path, {"http": {"port": 4321}})
    cfg = effective(run("config", "check", env=base_env(USERSD_CONFIG=str(path))))
    assert cfg["http"]["port"] == 4321


def test_env_overrides_file(tmp_path):
    cfg = effective(check(tmp_path, {"http": {"port": 5555}, "log": {"level": "warn"}},
                          env=base_env(USERSD_HTTP_PORT="1234", USERSD_LOG_LEVEL="debug")))
    assert cfg["http"]["port"] == 1234
    assert cfg["log"]["level"] == "debug"


def test_env_override_without_file_key(tmp_path):
    cfg = effective(check(tmp_path, {}, env=base_env(USERSD_HTTP_PORT="1234", USERSD_REGISTRATION_ENABLED="false")))
    assert cfg["http"]["port"] == 1234
    assert cfg["registration_enabled"] is False


def test_file_overrides_defaults(tmp_path):
    default = effective(check(tmp_path, {}))
    changed = effective(check(tmp_path, {"http": {"threads": default["http"]["threads"] + 1}}))
    assert changed["http"]["threads"] == default["http"]["threads"] + 1


def test_flag_beats_env(tmp_path):
    """`start --port` is applied over USERSD_HTTP_PORT: a bad flag value is reported even though the env is fine."""
    path = write_config(tmp_path, {"http": {"port": 5555}})
    done = run("start", "--foreground", "--config", str(path), "--port", "abc",
               env=base_env(USERSD_HTTP_PORT="1234"), timeout=20)
    line = one_error_line(done, "http.port", "abc")
    assert "1234" not in line


def test_env_error_names_key_and_variable(tmp_path):
    line = one_error_line(check(tmp_path, {}, env=base_env(USERSD_HTTP_PORT="abc")), "http.port")
    assert "USERSD_HTTP_PORT" in line


BAD_CONFIGS = [
    ("unknown top-level key", {"htp": {}}, "htp"),
    ("unknown nested key", {"http": {"prot": 80}}, "http.prot"),
    ("secret in the file", {"jwt": {"secret": "x" * 40}}, "jwt.secret"),
    ("port wrong type", {"http": {"port": "abc"}}, "http.port"),
    ("port float", {"http": {"port": 80.5}}, "http.port"),
    ("port out of range", {"http": {"port": 70000}}, "http.port"),
    ("port zero", {"http": {"port": 0}}, "http.port"),
    ("port negative", {"http": {"port": -1}}, "http.port"),
    ("section wrong type", {"http": 5}, "http"),
    ("bool wrong type", {"registration_enabled": "yes"}, "registration_enabled"),
    ("origins wrong type", {"http": {"cors_allowed_origins": "https://app.example.com"}}, "http.cors_allowed_origins"),
    ("origin with path", {"http": {"cors_allowed_origins": ["https://app.example.com/x"]}}, "http.cors_allowed_origins"),
    ("proxy not a network", {"http": {"trusted_proxies": ["10.0.0.0/99"]}}, "http.trusted_proxies"),
    ("bad log level", {"log": {"level": "loud"}}, "log.level"),
    ("bad env", {"env": "staging"}, "env"),
    ("bind not an ip", {"http": {"bind": "localhost"}}, "http.bind"),
    ("threads zero", {"http": {"threads": 0}}, "http.threads"),
    ("ttl too small", {"jwt": {"ttl": 1}}, "jwt.ttl"),
    ("body limit too small", {"http": {"max_body_bytes": 10}}, "http.max_body_bytes"),
    ("bad store url", {"storage": {"url": "postgres://db/users"}}, "storage.url"),
    ("null value", {"http": {"port": None}}, "http.port"),
]


@pytest.mark.parametrize("doc,key", [(d, k) for _, d, k in BAD_CONFIGS], ids=[n for n, _, _ in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key(tmp_path, doc, key):
    done = check(tmp_path, doc)
    line = one_error_line(done, key)
    assert done.stdout.strip() == ""
    assert TEST_SECRET not in line


def test_secret_in_file_is_not_echoed(tmp_path):
    secret = "do-not-echo-" + uuid.uuid4().hex
    line = one_error_line(check(tmp_path, {"jwt": {"secret": secret}}), "jwt.secret")
    assert secret not in line


@pytest.mark.parametrize("text", ["{", '{"http": {"port": 1,}}', "not json", '{"http": }', "[1, 2]", '"str"'])
def test_invalid_json_config_is_one_line(tmp_path, text):
    path = write_config(tmp_path, text)
    done = run("config", "check", "--config", str(path))
    line = one_error_line(done)
    assert str(path.name) in line
    assert done.stdout.strip() == ""


def test_invalid_json_config_error_says_where(tmp_path):
    path = write_config(tmp_path, '{\n  "http": {\n    "port": 80,,\n  }\n}\n')
    line = one_error_line(run("config", "check", "--config", str(path)))
    assert "line 3" in line, line


def test_missing_config_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.json"
    line = one_error_line(run("config", "check", "--config", str(missing)))
    assert "nope.json" in line


def test_production_without_secret_fails(tmp_path):
    env = base_env(secret=False, USERSD_ENV="production")
    done = check(tmp_path, {}, env=env)
    one_error_line(done, "jwt.secret")
    done = check(tmp_path, {"env": "production"}, env=base_env(secret=False))
    one_error_line(done, "jwt.secret")


def test_production_with_secret_is_fine(tmp_path):
    cfg = effective(check(tmp_path, {}, env=base_env(USERSD_ENV="production")))
    assert cfg["env"] == "production"
    assert TEST_SECRET not in json.dumps(cfg)


def test_short_secret_fails(tmp_path):
    line = one_error_line(check(tmp_path, {}, env=base_env(secret=False, USERSD_JWT_SECRET="zq9xk")), "jwt.secret")
    assert "zq9xk" not in line


def test_development_without_secret_uses_ephemeral_one(tmp_path):
    cfg = effective(check(tmp_path, {}, env=base_env(secret=False)))
    assert "redacted" in cfg["jwt"]["secret"].lower()


# --- start flag errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,key", [
    (["--port", "abc"], "http.port"),
    (["--port", "70000"], "http.port"),
    (["--port", "0"], "http.port"),
    (["--port", ""], "http.port"),
    (["--bind", "not-an-ip"], "http.bind"),
    (["--env", "staging"], "env"),
    (["--workers", "many"], "workers"),
])
def test_start_bad_flag_is_one_line_naming_the_key(tmp_path, flags, key):
    path = write_config(tmp_path, {"http": {"port": 5555}})
    done = run("start", "--foreground", "--config", str(path), *flags, timeout=20)
    one_error_line(done, key)


def test_start_with_bad_config_file_does_not_start(tmp_path):
    path = write_config(tmp_path, {"http": {"port": "abc"}})
    done = run("start", "--foreground", "--config", str(path), timeout=20)
    one_error_line(done, "http.port")


# --- user add -----------------------------------------------------------------------------------------

def login(server, email, password=PASSWORD):
    return requests.post(server.url("/v1/auth/login"), json={"email": email, "password": password}, timeout=10)


def me(server, token):
    return requests.get(server.url("/v1/users/me"), headers=server.auth(token), timeout=10)


def test_user_add_admin_can_log_in_as_admin(server):
    email = unique_email("admin")
    done = user_add(server.config_path, email, admin=True, first="Root", last="Admin")
    assert done.returncode == 0, done.stderr
    user_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{24}", user_id), done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    r = login(server, email)
    assert r.status_code == 200, r.text
    profile = me(server, r.json()["token"]).json()
    assert profile["id"] == user_id
    assert profile["role"] == "admin"
    assert (profile["email"], profile["firstName"], profile["lastName"]) == (email, "Root", "Admin")


def test_user_add_without_admin_is_a_user(server):
    email = unique_email("plain")
    done = user_add(server.config_path, email)
    assert done.returncode == 0, done.stderr
    r = login(server, email)
    assert r.status_code == 200
    assert me(server, r.json()["token"]).json()["role"] == "user"


@pytest.mark.parametrize("password", ["12345", "", "1234567"])
def test_user_add_short_password_fails(server, password):
    email = unique_email("short")
    done = user_add(server.config_path, email, password=password)
    assert done.returncode != 0
    assert "password" in done.stderr.lower()
    assert done.stdout.strip() == ""
    # Nothing was created.
    assert user_add(server.config_path, email).returncode == 0


@pytest.mark.parametrize("second", ["same", "upper"])
def test_user_add_duplicate_fails(server, second):
    email = unique_email("dup")
    assert user_add(server.config_path, email).returncode == 0
    other = email if second == "same" else email.upper()
    done = user_add(server.config_path, other, password="another password")
    assert done.returncode != 0
    assert done.stderr.strip() and len(done.stderr.strip().splitlines()) == 1, done.stderr
    # The original account and password are untouched.
    assert login(server, email).status_code == 200
    assert login(server, email, "another password").status_code == 401


@pytest.mark.parametrize("field,value", [("email", "not-an-email"), ("first", "   "), ("last", "")])
def test_user_add_invalid_fields_fail(server, field, value):
    kwargs = {"email": unique_email("bad"), "first": "Ok", "last": "Ok"}
    kwargs[field] = value
    done = user_add(server.config_path, kwargs["email"], first=kwargs["first"], last=kwargs["last"])
    assert done.returncode != 0
    assert done.stderr.strip()


def test_user_add_requires_email(server):
    done = run("user", "add", "--config", str(server.config_path), "--first-name", "A", "--last-name", "B",
               input_text=PASSWORD + "\n")
    assert done.returncode != 0
    assert "email" in (done.stderr + done.stdout).lower()


def test_user_add_works_before_any_server_started(tmp_path):
    path = write_config(tmp_path, {})
    done = user_add(path, unique_email("first"), admin=True)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f]{24}", done.stdout.strip())


def test_user_add_bad_config_is_one_line(tmp_path):
    path = write_config(tmp_path, {"http": {"port": 70000}})
    done = user_add(path, unique_email())
    one_error_line(done, "http.port")
