"""POST /v1/auth/register, POST /v1/auth/login, and bearer-token authentication on /v1/users...

Contract: docs/openapi.json. Each test uses its own uuid-based emails, so tests sharing the
module's server do not depend on each other or on their order.
"""
import base64
import gc
import hashlib
import hmac
import json
import re
import statistics
import time
import uuid
from datetime import datetime

import pytest
import requests

from usersd_harness import TEST_SECRET, Server, assert_problem

PASSWORD = "correct horse battery"
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
USER_KEYS = {"id", "email", "firstName", "lastName", "phone", "country", "state", "role", "createdAt",
             "updatedAt", "_links"}


# --- helpers ------------------------------------------------------------------------------------------

def unique_email(prefix="u", domain="example.com"):
    return f"{prefix}{uuid.uuid4().hex[:16]}@{domain}"


def valid_body(**overrides):
    body = {"email": unique_email(), "password": PASSWORD, "firstName": "Ada", "lastName": "Lovelace"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _ABSENT}


_ABSENT = object()


def post_json(server, path, body, headers=None):
    return requests.post(server.url(path), json=body, headers=headers or {}, timeout=10)


def parse_rfc3339(text):
    assert RFC3339.match(text), f"not RFC 3339: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_user_body(body, email):
    assert set(body) <= USER_KEYS, f"unexpected members: {set(body) - USER_KEYS}"
    assert OBJECT_ID.match(body["id"]), body
    assert body["email"] == email
    assert body["role"] == "user"
    created = parse_rfc3339(body["createdAt"])
    updated = parse_rfc3339(body["updatedAt"])
    assert updated >= created
    assert body["_links"] == {"self": {"href": f"/v1/users/{body['id']}"}}


def assert_no_secrets(response, password=PASSWORD):
    """Neither the password nor its hash (nor a passwordHash member) appears in the response body."""
    text = response.content.decode("utf-8", "replace")
    assert password not in text, text
    assert "$argon2" not in text, text
    if response.headers.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict):
            assert "password" not in body and "passwordHash" not in body, body


def validation_fields(response):
    body = assert_problem(response, 400)
    assert body.get("type"), body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for e in errors:
        assert set(e) == {"field", "message"}, e
        assert isinstance(e["field"], str) and isinstance(e["message"], str) and e["message"], e
    return {e["field"] for e in errors}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(subject, **overrides):
    now = int(time.time())
    claims = {"iss": "usersd", "aud": "usersd", "sub": subject, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _ABSENT}


def forge_token(claims, secret=TEST_SECRET, alg="HS256", header=None):
    header = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    if alg == "none":
        signature = b""
    else:
        signature = hmac.new(secret.encode(), signing_input.encode(), digests[alg]).digest()
    return signing_input + "." + b64url(signature)


def me(server, token, scheme="Bearer"):
    return requests.get(server.url("/v1/users/me"), headers=server.auth(token, scheme), timeout=10)


def assert_invalid_token(response):
    assert_problem(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer"), response.headers
    assert 'realm="usersd"' in challenge, challenge
    assert 'error="invalid_token"' in challenge, challenge


@pytest.fixture
def make_server(tmp_path):
    """Starts Servers with custom config; stops them after the test, once its responses are released
    (so a stop never waits on a client socket that only a lingering response object keeps open)."""
    started = []

    def make(config=None, name="srv"):
        directory = tmp_path / f"{name}{len(started)}"
        directory.mkdir(parents=True, exist_ok=True)
        srv = Server(directory, config=config)
        started.append(srv)
        return srv.start()

    yield make
    gc.collect()  # responses in reference cycles keep their keep-alive sockets open
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def account(shared_server):
    """One registered, logged-in user on the module's server: (id, email, token)."""
    email = unique_email("acct")
    r = shared_server.register(email)
    assert r.status_code == 201, r.text
    return r.json()["id"], email, shared_server.login(email)


# --- registration -------------------------------------------------------------------------------------

def test_register_returns_201_with_location_etag_and_user(shared_server):
    email = unique_email("reg")
    r = shared_server.register(email)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert_user_body(body, email)
    assert body["firstName"] == "Reg" and body["lastName"] == "User"
    assert r.headers["Location"] == f"/v1/users/{body['id']}"
    assert body["_links"]["self"]["href"] == r.headers["Location"]
    assert re.match(r'^(W/)?"[^"]+"$', r.headers["ETag"]), r.headers["ETag"]
    for optional in ("phone", "country", "state"):
        assert optional not in body
    assert_no_secrets(r)


def test_registered_user_is_readable_at_location_with_same_etag(shared_server):
    email = unique_email("loc")
    r = shared_server.register(email)
    assert r.status_code == 201, r.text
    token = shared_server.login(email)
    got = requests.get(shared_server.url(r.headers["Location"]), headers=shared_server.auth(token), timeout=10)
    assert got.status_code == 200, got.text
    assert got.json() == r.json()
    assert got.headers["ETag"] == r.headers["ETag"]
    assert_no_secrets(got)


def test_register_with_optional_fields_echoes_them(shared_server):
    email = unique_email("opt")
    r = shared_server.register(email, phone="+44 20 7946 0000", country="United Kingdom", state="London")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["phone"], body["country"], body["state"]) == ("+44 20 7946 0000", "United Kingdom", "London")
    assert_no_secrets(r)


def test_register_with_null_optional_fields(shared_server):
    email = unique_email("null")
    r = shared_server.register(email, phone=None, country=None, state=None)
    assert r.status_code == 201, r.text
    body = r.json()
    for optional in ("phone", "country", "state"):
        assert optional not in body, body


@pytest.mark.parametrize("first,second", [
    ("Ann.{u}@X.com", "ann.{u}@x.com"),
    ("bob.{u}@example.com", "BOB.{u}@EXAMPLE.COM"),
    ("carl.{u}@example.com", "carl.{u}@example.com"),
])
def test_register_duplicate_email_case_insensitive_is_409(shared_server, first, second):
    u = uuid.uuid4().hex[:12]
    r1 = shared_server.register(first.format(u=u))
    assert r1.status_code == 201, r1.text
    r2 = shared_server.register(second.format(u=u), password="another password 123")
    body = assert_problem(r2, 409)
    assert body["type"]
    assert_no_secrets(r2, "another password 123")


def test_register_duplicate_does_not_replace_the_first_account(shared_server):
    u = uuid.uuid4().hex[:12]
    r1 = shared_server.register(f"Dup.{u}@X.com")
    assert r1.status_code == 201
    r2 = shared_server.register(f"dup.{u}@x.com", password="someone elses pw")
    assert r2.status_code == 409
    shared_server.login(f"dup.{u}@x.com")  # the original password still works
    bad = post_json(shared_server, "/v1/auth/login", {"email": f"dup.{u}@x.com", "password": "someone elses pw"})
    assert bad.status_code == 401


def test_register_disabled_by_config_is_403(make_server):
    srv = make_server({"registration_enabled": False})
    r = srv.register(unique_email("closed"))
    body = assert_problem(r, 403)
    assert body["type"]
    # Only self-registration is closed: accounts made by the CLI still log in.
    srv.add_user("closed-admin@example.com", admin=True)
    token = srv.login("closed-admin@example.com")
    listing = requests.get(srv.url("/v1/users"), headers=srv.auth(token), timeout=10)
    assert listing.status_code == 200
    assert listing.json()["total"] == 1  # the refused registration created nothing


@pytest.mark.parametrize("length", [8, 128])
def test_register_password_length_bounds_accepted(shared_server, length):
    email = unique_email("pw")
    password = "p" * length
    r = post_json(shared_server, "/v1/auth/register", valid_body(email=email, password=password))
    assert r.status_code == 201, r.text
    assert_no_secrets(r, password)
    shared_server.login(email, password)


@pytest.mark.parametrize("length", [1, 100])
def test_register_name_length_bounds_accepted(shared_server, length):
    r = post_json(shared_server, "/v1/auth/register", valid_body(firstName="F" * length, lastName="L" * length))
    assert r.status_code == 201, r.text
    assert r.json()["firstName"] == "F" * length


@pytest.mark.parametrize("password,ok", [("é" * 8, True), ("é" * 128, True), ("é" * 7, False), ("é" * 129, False),
                                         ("🔑" * 8, True), ("🔑" * 7, False)],
                         ids=["8 two-byte", "128 two-byte", "7 two-byte", "129 two-byte", "8 four-byte", "7 four-byte"])
def test_register_password_length_counts_characters(shared_server, password, ok):
    r = post_json(shared_server, "/v1/auth/register", valid_body(password=password))
    if ok:
        assert r.status_code == 201, r.text
    else:
        assert validation_fields(r) == {"password"}


def _email_of_length(n):
    """A valid-looking address of exactly n characters: 64-character local part, 1..63-character labels."""
    local = "l" * 64
    left = n - len(local) - 1
    labels = []
    while left > 63:
        labels.append("d" * 62)
        left -= 63  # the label and its dot
    labels.append("d" * left)
    email = local + "@" + ".".join(labels)
    assert len(email) == n, (n, len(email))
    return email


def test_register_email_length_bounds(shared_server):
    longest = _email_of_length(254).replace("l" * 16, uuid.uuid4().hex[:16], 1)
    r = post_json(shared_server, "/v1/auth/register", valid_body(email=longest))
    assert r.status_code == 201, r.text
    assert r.json()["email"] == longest
    assert validation_fields(post_json(shared_server, "/v1/auth/register",
                                       valid_body(email=_email_of_length(255)))) == {"email"}


def test_register_name_length_counts_characters_not_bytes(shared_server):
    name = "é" * 100  # 200 bytes of UTF-8, 100 characters
    r = post_json(shared_server, "/v1/auth/register", valid_body(firstName=name))
    assert r.status_code == 201, r.text
    assert r.json()["firstName"] == name


def _missing(*fields):
    return {f: _ABSENT for f in fields}


INVALID_REGISTRATIONS = [
    ("missing email", _missing("email"), {"email"}),
    ("missing password", _missing("password"), {"password"}),
    ("missing firstName", _missing("firstName"), {"firstName"}),
    ("missing lastName", _missing("lastName"), {"lastName"}),
    ("missing everything", _missing("email", "password", "firstName", "lastName"),
     {"email", "password", "firstName", "lastName"}),
    ("password 7 chars", {"password": "p" * 7}, {"password"}),
    ("password 129 chars", {"password": "p" * 129}, {"password"}),
    ("password empty", {"password": ""}, {"password"}),
    ("firstName empty", {"firstName": ""}, {"firstName"}),
    ("lastName empty", {"lastName": ""}, {"lastName"}),
    ("firstName 101 chars", {"firstName": "F" * 101}, {"firstName"}),
    ("lastName 101 chars", {"lastName": "L" * 101}, {"lastName"}),
    ("firstName blank", {"firstName": "   "}, {"firstName"}),
    ("lastName blank tab", {"lastName": "\t \t"}, {"lastName"}),
    ("firstName control char", {"firstName": "A\u0001B"}, {"firstName"}),
    ("lastName newline", {"lastName": "Love\nlace"}, {"lastName"}),
    ("email no at", {"email": "not-an-email"}, {"email"}),
    ("email no domain", {"email": "ann@"}, {"email"}),
    ("email no local part", {"email": "@example.com"}, {"email"}),
    ("email two ats", {"email": "a@b@example.com"}, {"email"}),
    ("email with space", {"email": "a b@example.com"}, {"email"}),
    ("email empty", {"email": ""}, {"email"}),
    ("email too long", {"email": "a" * 64 + "@" + ("d" * 60 + ".") * 4 + "com"}, {"email"}),
    ("phone letters", {"phone": "call me"}, {"phone"}),
    ("phone no digit", {"phone": "+()-"}, {"phone"}),
    ("phone empty", {"phone": ""}, {"phone"}),
    ("phone 33 chars", {"phone": "1" * 33}, {"phone"}),
    ("country blank", {"country": "  "}, {"country"}),
    ("country 101 chars", {"country": "C" * 101}, {"country"}),
    ("state empty", {"state": ""}, {"state"}),
    ("state 101 chars", {"state": "S" * 101}, {"state"}),
    ("email null", {"email": None}, {"email"}),
    ("password null", {"password": None}, {"password"}),
    ("firstName null", {"firstName": None}, {"firstName"}),
    ("lastName null", {"lastName": None}, {"lastName"}),
    ("unknown field", {"nickname": "ada"}, {"nickname"}),
    ("read-only id", {"id": "65f0c0ffee0000000000abcd"}, {"id"}),
    ("read-only createdAt", {"createdAt": "2024-01-01T00:00:00Z"}, {"createdAt"}),
    ("read-only updatedAt", {"updatedAt": "2024-01-01T00:00:00Z"}, {"updatedAt"}),
    ("read-only passwordHash", {"passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$x$y"}, {"passwordHash"}),
    ("read-only _links", {"_links": {"self": {"href": "/v1/users/x"}}}, {"_links"}),
    ("role admin at registration", {"role": "admin"}, {"role"}),
    ("role user at registration", {"role": "user"}, {"role"}),
    ("dollar key", {"$where": "1"}, {"$where"}),
    ("dollar operator object", {"email": {"$ne": None}}, {"email"}),
    ("several bad fields", {"email": "nope", "password": "short", "firstName": "   ", "x": 1},
     {"email", "password", "firstName", "x"}),
]

NON_STRING_VALUES = [("number", 123), ("float", 1.5), ("object", {"a": "b"}), ("array", ["x"]), ("bool", True)]
ALL_FIELDS = ["email", "password", "firstName", "lastName", "phone", "country", "state"]
for _field in ALL_FIELDS:
    for _kind, _value in NON_STRING_VALUES:
        INVALID_REGISTRATIONS.append((f"{_field} {_kind}", {_field: _value}, {_field}))


@pytest.mark.parametrize("overrides,expected", [(o, e) for _, o, e in INVALID_REGISTRATIONS],
                         ids=[name for name, _, _ in INVALID_REGISTRATIONS])
def test_register_validation_errors_list_each_bad_field(shared_server, overrides, expected):
    body = valid_body(**overrides)
    r = post_json(shared_server, "/v1/auth/register", body)
    assert validation_fields(r) == expected
    assert_no_secrets(r)
    # Nothing was created: the same (valid) email can still register.
    if "email" not in expected:
        ok = post_json(shared_server, "/v1/auth/register", valid_body(email=body["email"]))
        assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("payload", [[], "a string", 42, None, True], ids=["array", "string", "number", "null", "bool"])
def test_register_non_object_body_is_400(shared_server, payload):
    r = requests.post(shared_server.url("/v1/auth/register"), data=json.dumps(payload),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert_problem(r, 400)


# --- login --------------------------------------------------------------------------------------------

def test_login_returns_bearer_token(shared_server, account):
    user_id, email, _ = account
    r = post_json(shared_server, "/v1/auth/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"token", "tokenType", "expiresIn"}
    assert body["tokenType"] == "Bearer"
    assert isinstance(body["expiresIn"], int) and not isinstance(body["expiresIn"], bool)
    assert body["expiresIn"] > 0
    assert_no_secrets(r)
    parts = body["token"].split(".")
    assert len(parts) == 3
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    assert header["alg"] == "HS256"
    assert claims["sub"] == user_id
    assert claims["iss"] == "usersd"
    assert claims["aud"] == "usersd" or "usersd" in claims["aud"]
    assert claims["exp"] - claims["iat"] == body["expiresIn"]
    assert abs(claims["iat"] - time.time()) < 60
    assert me(shared_server, body["token"]).json()["id"] == user_id


def test_expires_in_follows_configured_ttl(make_server):
    srv = make_server({"jwt": {"ttl": 120}})
    srv.add_user("ttl@example.com")
    r = post_json(srv, "/v1/auth/login", {"email": "ttl@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["expiresIn"] == 120
    claims = json.loads(b64url_decode(r.json()["token"].split(".")[1]))
    assert claims["exp"] - claims["iat"] == 120


def test_concurrent_registrations_of_one_email_create_one_account(shared_server):
    import threading  # noqa: PLC0415

    email = unique_email("race")
    statuses = []

    def attempt(i):
        r = post_json(shared_server, "/v1/auth/register", valid_body(email=email if i % 2 else email.upper()))
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 7, statuses


def test_each_login_issues_a_distinct_token(shared_server, account):
    _, email, _ = account
    t1 = shared_server.login(email)
    t2 = shared_server.login(email)
    assert t1 != t2  # distinct jti


def test_login_unknown_email_and_wrong_password_are_indistinguishable(shared_server, account):
    _, email, _ = account
    # The same request id for both: the body quotes it (requestId), and nothing else may differ.
    same_id = {"X-Request-Id": "indistinguishable-1"}
    unknown = post_json(shared_server, "/v1/auth/login", {"email": unique_email("ghost"), "password": PASSWORD}, same_id)
    wrong = post_json(shared_server, "/v1/auth/login", {"email": email, "password": "wrong password!"}, same_id)
    assert_problem(unknown, 401)
    assert_problem(wrong, 401)
    assert unknown.content == wrong.content
    assert unknown.headers["Content-Type"] == wrong.headers["Content-Type"]
    for r in (unknown, wrong):
        challenge = r.headers.get("WWW-Authenticate")
        assert challenge and challenge.startswith("Bearer") and 'realm="usersd"' in challenge, r.headers
    assert unknown.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
    assert "wrong password!" not in wrong.text


def test_login_email_is_case_insensitive(shared_server):
    u = uuid.uuid4().hex[:12]
    r = shared_server.register(f"Mixed.{u}@Example.COM")
    assert r.status_code == 201
    user_id = r.json()["id"]
    for variant in (f"mixed.{u}@example.com", f"MIXED.{u}@EXAMPLE.COM", f"Mixed.{u}@Example.COM"):
        token = shared_server.login(variant)
        assert me(shared_server, token).json()["id"] == user_id


def test_login_password_is_case_sensitive(shared_server, account):
    _, email, _ = account
    r = post_json(shared_server, "/v1/auth/login", {"email": email, "password": PASSWORD.upper()})
    assert_problem(r, 401)


INVALID_LOGINS = [
    ("empty object", {}, {"email", "password"}),
    ("missing password", {"email": "a@example.com"}, {"password"}),
    ("missing email", {"password": PASSWORD}, {"email"}),
    ("email number", {"email": 1, "password": PASSWORD}, {"email"}),
    ("email null", {"email": None, "password": PASSWORD}, {"email"}),
    ("email array", {"email": ["a@example.com"], "password": PASSWORD}, {"email"}),
    ("email object", {"email": {"$ne": ""}, "password": PASSWORD}, {"email"}),
    ("password number", {"email": "a@example.com", "password": 12345678}, {"password"}),
    ("password bool", {"email": "a@example.com", "password": True}, {"password"}),
    ("password object", {"email": "a@example.com", "password": {"$gt": ""}}, {"password"}),
    ("unknown field", {"email": "a@example.com", "password": PASSWORD, "remember": True}, {"remember"}),
    ("password too long", {"email": "a@example.com", "password": "p" * 1025}, {"password"}),
]


@pytest.mark.parametrize("body,expected", [(b, e) for _, b, e in INVALID_LOGINS],
                         ids=[name for name, _, _ in INVALID_LOGINS])
def test_login_validation_errors_are_400(shared_server, body, expected):
    r = post_json(shared_server, "/v1/auth/login", body)
    assert validation_fields(r) == expected


@pytest.mark.parametrize("payload", [[], "x", 1, None], ids=["array", "string", "number", "null"])
def test_login_non_object_body_is_400(shared_server, payload):
    r = requests.post(shared_server.url("/v1/auth/login"), data=json.dumps(payload),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert_problem(r, 400)


def test_login_timing_unknown_email_close_to_wrong_password(shared_server, account):
    _, email, _ = account

    def timed(body):
        start = time.perf_counter()
        r = post_json(shared_server, "/v1/auth/login", body)
        elapsed = time.perf_counter() - start
        assert r.status_code == 401, r.text
        return elapsed

    timed({"email": email, "password": "warm up pw"})  # warm-up
    unknown = [timed({"email": unique_email("nobody"), "password": "wrong password"}) for _ in range(5)]
    wrong = [timed({"email": email, "password": "wrong password"}) for _ in range(5)]
    mu, mw = statistics.median(unknown), statistics.median(wrong)
    assert mu * 3 >= mw and mw * 3 >= mu, f"unknown email {mu * 1000:.1f} ms vs wrong password {mw * 1000:.1f} ms"


# --- authentication on /v1/users --------------------------------------------------------------------

def test_no_authorization_header_is_401_with_plain_challenge(shared_server):
    r = requests.get(shared_server.url("/v1/users/me"), timeout=10)
    assert_problem(r, 401)
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer"), r.headers
    assert 'realm="usersd"' in challenge
    assert "error=" not in challenge  # RFC 6750 3.1: no error code when no credentials were sent


USERS_OPERATIONS = [
    ("GET", "/v1/users"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users/me"),
    ("GET", "/v1/users/65f0c0ffee0000000000abcd"),
    ("PUT", "/v1/users/65f0c0ffee0000000000abcd"),
    ("PATCH", "/v1/users/65f0c0ffee0000000000abcd"),
    ("DELETE", "/v1/users/65f0c0ffee0000000000abcd"),
]


@pytest.mark.parametrize("method,path", USERS_OPERATIONS)
def test_every_users_operation_requires_a_token(shared_server, method, path):
    kwargs = {}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = valid_body()
    r = requests.request(method, shared_server.url(path), timeout=10, **kwargs)
    assert_problem(r, 401)
    assert 'realm="usersd"' in r.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("method,path", USERS_OPERATIONS)
def test_every_users_operation_rejects_a_bad_token(shared_server, method, path):
    kwargs = {}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = valid_body()
    r = requests.request(method, shared_server.url(path), headers={"Authorization": "Bearer garbage"},
                         timeout=10, **kwargs)
    assert_invalid_token(r)


def test_forged_token_with_correct_secret_is_accepted(shared_server, account):
    """Sanity check of forge_token: the negative tests below differ from this only in the one flaw."""
    user_id, _, _ = account
    r = me(shared_server, forge_token(jwt_claims(user_id)))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user_id


def _tampered_signature(token):
    head, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def _swapped_payload(token, other_sub):
    head, payload, sig = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = other_sub
    return f"{head}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{sig}"


BAD_TOKENS = {
    "garbage": lambda uid, real: "garbage",
    "three garbage parts": lambda uid, real: "abc.def.ghi",
    "tampered signature": lambda uid, real: _tampered_signature(real),
    "payload swapped to another sub": lambda uid, real: _swapped_payload(real, "65f0c0ffee0000000000abcd"),
    "signature stripped": lambda uid, real: real.rsplit(".", 1)[0] + ".",
    "two parts": lambda uid, real: real.rsplit(".", 1)[0],
    "other secret": lambda uid, real: forge_token(jwt_claims(uid), secret="another-secret-0123456789abcdef-xyz"),
    "expired beyond leeway": lambda uid, real: forge_token(
        jwt_claims(uid, iat=int(time.time()) - 7200, exp=int(time.time()) - 120)),
    "issued in the future": lambda uid, real: forge_token(
        jwt_claims(uid, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200)),
    "alg none": lambda uid, real: forge_token(jwt_claims(uid), alg="none", header={"alg": "none", "typ": "JWT"}),
    "alg none with hs256 signature": lambda uid, real: (
        b64url(b'{"alg":"none","typ":"JWT"}') + "." + real.split(".")[1] + "." + real.split(".")[2]),
    "alg HS384": lambda uid, real: forge_token(jwt_claims(uid), alg="HS384"),
    "alg HS512": lambda uid, real: forge_token(jwt_claims(uid), alg="HS512"),
    "wrong iss": lambda uid, real: forge_token(jwt_claims(uid, iss="someone-else")),
    "missing iss": lambda uid, real: forge_token(jwt_claims(uid, iss=_ABSENT)),
    "wrong aud": lambda uid, real: forge_token(jwt_claims(uid, aud="another-service")),
    "missing aud": lambda uid, real: forge_token(jwt_claims(uid, aud=_ABSENT)),
    "missing sub": lambda uid, real: forge_token(jwt_claims(uid, sub=_ABSENT)),
    "empty sub": lambda uid, real: forge_token(jwt_claims(uid, sub="")),
    "numeric sub": lambda uid, real: forge_token(jwt_claims(uid, sub=12345)),
    "sub of nonexistent user": lambda uid, real: forge_token(jwt_claims("65f0c0ffee0000000000abcd")),
    "missing exp": lambda uid, real: forge_token(jwt_claims(uid, exp=_ABSENT)),
    "string exp": lambda uid, real: forge_token(jwt_claims(uid, exp=str(int(time.time()) + 3600))),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_invalid_tokens_are_401_invalid_token(shared_server, account, kind):
    user_id, _, real = account
    token = BAD_TOKENS[kind](user_id, real)
    r = me(shared_server, token)
    assert_invalid_token(r)
    assert user_id not in r.text


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"])
def test_malformed_authorization_header_is_401(shared_server, header):
    r = requests.get(shared_server.url("/v1/users/me"), headers={"Authorization": header}, timeout=10)
    assert_problem(r, 401)
    assert 'realm="usersd"' in r.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("scheme", ["Bearer", "JWT", "bearer"])
def test_bearer_and_jwt_schemes_both_work(shared_server, account, scheme):
    user_id, email, token = account
    r = me(shared_server, token, scheme)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user_id and r.json()["email"] == email


def test_token_of_deleted_user_is_401(shared_server):
    email = unique_email("gone")
    r = shared_server.register(email)
    assert r.status_code == 201
    user_id = r.json()["id"]
    token = shared_server.login(email)
    assert me(shared_server, token).status_code == 200
    d = requests.delete(shared_server.url(f"/v1/users/{user_id}"), headers=shared_server.auth(token), timeout=10)
    assert d.status_code == 204, d.text
    assert_invalid_token(me(shared_server, token))
    assert_invalid_token(requests.get(shared_server.url("/v1/users"), headers=shared_server.auth(token), timeout=10))
    # And the deleted account can no longer log in.
    gone = post_json(shared_server, "/v1/auth/login", {"email": email, "password": PASSWORD})
    assert_problem(gone, 401)


def test_token_survives_server_restart_with_same_secret(tmp_path):
    srv = Server(tmp_path).start()
    try:
        srv.add_user("restart@example.com")
        token = srv.login("restart@example.com")
    finally:
        srv.stop()
    srv2 = Server(tmp_path)
    srv2.start()
    try:
        assert me(srv2, token).status_code == 200
    finally:
        srv2.stop()
