"""Hostile input against the live server: every attempt gets a 4xx problem+json (never a 5xx, a crash or a
hang) and leaves the store exactly as it was. Then authorization: what a user may not do to others (BOLA)
and what only admins may do (BFLA).

Runs on both stores (the Makefile's MONGO_SUITES). The store is compared with `usersd export` before and after.
"""
import base64
import hashlib
import hmac
import json
import socket
import uuid

import pytest
import requests

from supervisor_helpers import read_response
from usersd_harness import TEST_SECRET, Server, assert_problem

PASSWORD = "correct horse battery"
OPERATORS = [{"$ne": None}, {"$gt": ""}, {"$where": "sleep(1000)"}, {"$regex": ".*"}, ["a@example.com"],
             {"$in": ["a@example.com"]}, {"$exists": True}]
PROTO_KEYS = ["__proto__", "constructor", "prototype", "$set", "$where", "email.$", "_id", "passwordHash"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hostile")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def people(srv):
    """An admin and two users, created once; tests must leave them as they are."""
    admin_email = f"admin{uuid.uuid4().hex[:8]}@example.com"
    admin_id = srv.add_user(admin_email, PASSWORD, admin=True)
    out = {"admin": (admin_id, srv.login(admin_email, PASSWORD), admin_email)}
    for name in ("alice", "bob"):
        email = f"{name}{uuid.uuid4().hex[:8]}@example.com"
        r = srv.register(email, PASSWORD)
        assert r.status_code == 201, r.text
        out[name] = (r.json()["id"], srv.login(email, PASSWORD), email)
    return out


def export(srv):
    done = srv.cli("export", "--config", str(srv.config_path))
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


@pytest.fixture
def unchanged(srv, people):
    """Asserts the store is byte-for-byte the same after the test."""
    before = export(srv)
    yield
    assert export(srv) == before, "hostile input changed the store"


def refused(r, statuses=None):
    assert 400 <= r.status_code < 500, f"{r.status_code} {r.text[:300]}"
    if statuses:
        assert r.status_code in statuses, f"{r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    return r


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def valid_registration(**overrides):
    body = {"email": f"r{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD, "firstName": "Eve",
            "lastName": "Hostile"}
    body.update(overrides)
    return body


def raw(srv, data: bytes, timeout=15):
    """Sends raw bytes on a fresh connection; returns (response, bytes left unparsed)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock, timeout=timeout)


def alive(srv):
    assert requests.get(srv.url("/healthcheck"), timeout=10).status_code == 200


# --- NoSQL operators and odd keys in every field ---------------------------------------------------------

@pytest.mark.parametrize("field", ["email", "password", "firstName", "lastName", "phone", "country", "state", "role"])
@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: json.dumps(o))
def test_operator_in_any_registration_field_is_400(srv, unchanged, field, operator):
    refused(requests.post(srv.url("/v1/auth/register"), json=valid_registration(**{field: operator}), timeout=15),
            {400})


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: json.dumps(o))
def test_operator_in_login_is_400_and_logs_nobody_in(srv, people, unchanged, operator):
    for body in ({"email": operator, "password": PASSWORD}, {"email": people["alice"][2], "password": operator},
                 {"email": operator, "password": operator}):
        refused(requests.post(srv.url("/v1/auth/login"), json=body, timeout=15), {400})


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("field", ["email", "firstName", "lastName", "phone", "country", "state", "role"])
def test_operator_in_any_update_field_is_400(srv, people, unchanged, method, field):
    uid, token, email = people["alice"]
    body = {"email": email, "firstName": "A", "lastName": "B"} if method == "PUT" else {}
    for operator in OPERATORS:
        body[field] = operator
        refused(requests.request(method, srv.url(f"/v1/users/{uid}"), json=body, headers=bearer(token), timeout=15),
                {400})


@pytest.mark.parametrize("key", PROTO_KEYS)
def test_prototype_and_operator_keys_are_unknown_fields(srv, people, unchanged, key):
    uid, token, _ = people["alice"]
    payload = {"role": "admin", "isAdmin": True}
    refused(requests.post(srv.url("/v1/auth/register"), json={**valid_registration(), key: payload}, timeout=15), {400})
    refused(requests.patch(srv.url(f"/v1/users/{uid}"), json={key: payload}, headers=bearer(token), timeout=15), {400})
    refused(requests.post(srv.url("/v1/auth/login"), json={"email": "x@example.com", "password": PASSWORD,
                                                          key: payload}, timeout=15), {400})


@pytest.mark.parametrize("query", [
    "limit[$gt]=0", "limit=1&limit=100", "cursor[$ne]=x", "page[$gt]=1", "limit=99999999999999999999999",
    "limit=1e3", "limit=-1", "limit=%00", "cursor=%ff%fe", "cursor=" + "A" * 5000, "page=1&cursor=YQ",
    "limit=0x10", "page=NaN", "limit= 5", "$where=1", "__proto__[role]=admin", "filter={\"$ne\":null}",
])
def test_hostile_query_strings_are_400(srv, people, unchanged, query):
    refused(requests.get(srv.url(f"/v1/users?{query}"), headers=bearer(people["bob"][1]), timeout=15), {400})


# --- malformed JSON shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"email":"a@example.com","email":"b@example.com","password":"correct horse battery","firstName":"A","lastName":"B"}',
    b'{"email":"a@example.com","password":"correct horse battery","firstName":"A","lastName":"B","lastName":"C"}',
    b'{"firstName":"A","firstName":{"$ne":null}}',
])
def test_duplicate_keys_are_400(srv, people, unchanged, body):
    r = refused(requests.post(srv.url("/v1/auth/register"), data=body, headers={"Content-Type": "application/json"},
                              timeout=15), {400})
    assert "twice" in r.json()["detail"]
    uid, token, _ = people["alice"]
    refused(requests.patch(srv.url(f"/v1/users/{uid}"), data=body, headers={"Content-Type": "application/json",
                                                                            **bearer(token)}, timeout=15), {400})


@pytest.mark.parametrize("body", [
    b'{"firstName": 1e999999}', b'{"firstName": 123456789012345678901234567890}', b'{"firstName": -1e-99999}',
    b'{"phone": 1' + b"0" * 5000 + b"}", b'{"firstName": NaN}', b'{"firstName": Infinity}',
    b'{"firstName": "\xff\xfe"}', b'{"firstName": "\xc0\xaf"}', b'{"firstName": "\xed\xa0\x80"}',
    b'{"firstName": "\\ud800"}', b'{"firstName": "a\x00b"}', b'{"firstName": "a\\u0000b"}',
    b'{"firstName": "' + b"x" * 60000 + b'"}',
])
def test_hostile_json_values_are_4xx(srv, people, unchanged, body):
    uid, token, _ = people["alice"]
    refused(requests.patch(srv.url(f"/v1/users/{uid}"), data=body, headers={"Content-Type": "application/json",
                                                                            **bearer(token)}, timeout=15))


def test_long_strings_in_every_field_are_400(srv, people, unchanged):
    uid, token, email = people["alice"]
    for field in ("firstName", "lastName", "phone", "country", "state"):
        refused(requests.patch(srv.url(f"/v1/users/{uid}"), json={field: "x" * 5000}, headers=bearer(token),
                               timeout=15), {400})
    refused(requests.post(srv.url("/v1/auth/register"),
                          json=valid_registration(email="a" * 300 + "@example.com"), timeout=15), {400})
    refused(requests.post(srv.url("/v1/auth/register"), json=valid_registration(password="p" * 5000), timeout=15),
            {400})
    refused(requests.post(srv.url("/v1/auth/login"), json={"email": email, "password": "p" * 5000}, timeout=15),
            {400})


# --- tokens --------------------------------------------------------------------------------------------

def b64(data: dict | bytes) -> str:
    raw_bytes = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw_bytes).rstrip(b"=").decode()


def claims_for(uid):
    import time
    now = int(time.time())
    return {"iss": "usersd", "aud": "usersd", "sub": uid, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}


def signed(header, claims, secret=TEST_SECRET):
    signing_input = f"{b64(header)}.{b64(claims)}"
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def test_hostile_tokens_are_401(srv, people, unchanged):
    admin_id = people["admin"][0]
    claims = claims_for(admin_id)
    real = people["alice"][1]
    tokens = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "alg None no sig": f"{b64({'alg': 'None'})}.{b64(claims)}",
        "alg hs256 lowercase": signed({"alg": "hs256"}, claims),
        "alg HS512": signed({"alg": "HS512"}, claims),
        "alg RS256 with secret as key": signed({"alg": "RS256"}, claims),
        "kid/jku injection": signed({"alg": "HS256", "kid": "../../dev/null", "jku": "http://evil/"}, claims,
                                    secret=""),
        "empty secret": signed({"alg": "HS256"}, claims, secret=""),
        "swapped payload": ".".join([real.split(".")[0], b64(claims), real.split(".")[2]]),
        "overlong": "a" * 7000,
        "overlong dotted": ".".join(["A" * 2300] * 3),
        "many dots": "." * 5000,
        "nul": "abc\x00def",
        "json header": json.dumps({"alg": "HS256"}),
    }
    for name, token in tokens.items():
        headers = bearer(token)
        try:
            r = requests.get(srv.url("/v1/users/me"), headers=headers, timeout=15)
        except (ValueError, requests.exceptions.InvalidHeader):
            continue  # the client library itself refuses to send it (the NUL case)
        refused(r, {401})
        assert admin_id not in r.text, name


def test_an_oversized_authorization_header_is_431(srv, people):
    r = requests.get(srv.url("/v1/users/me"), headers=bearer("a" * 20000), timeout=15)
    refused(r, {431})


# --- header injection, path traversal ------------------------------------------------------------------

def test_crlf_in_reflected_values_never_splits_the_response(srv, people, unchanged):
    token = people["bob"][1]
    for path in ["/v1/users/%0d%0aSet-Cookie:%20a=b", "/v1/users?cursor=%0d%0aSet-Cookie:%20a=b",
                 "/v1/users/x%0aLocation:%20http://evil"]:
        r = requests.get(srv.url(path), headers={**bearer(token), "X-Request-Id": "abc"}, timeout=15)
        refused(r)
        assert "Set-Cookie" not in r.headers and "evil" not in r.headers.get("Location", "")
    # A raw CR / LF inside a header value: the request is refused or the value is not echoed raw.
    resp = raw(srv, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\rSet-Cookie: a=b\r\n\r\n")
    assert resp.status < 500 and "set-cookie" not in resp.headers
    resp = raw(srv, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc%0d%0aSet-Cookie:%20a=b\r\n\r\n")
    assert resp.status < 500 and "set-cookie" not in resp.headers
    assert "\r" not in resp.headers.get("x-request-id", "") and "%0d" not in resp.headers.get("x-request-id", "")


@pytest.mark.parametrize("path", [
    "/v1/users/..", "/v1/users/../users", "/v1/users/..%2f..%2fetc%2fpasswd", "/v1/users/%2e%2e",
    "/v1/users/%2e%2e%2f%2e%2e%2fhealthcheck", "/v1/users/....//....//etc/passwd", "/v1/users/%00",
    "/v1/users/000000000000000000000000%00", "/v1/users/*", "/v1/users/%ff", "/v1/users/;id",
    "/v1/users/{\"$ne\":null}", "/v1/users/' OR '1'='1",
])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_path_traversal_and_odd_ids_are_4xx(srv, people, unchanged, path, method):
    admin_token = people["admin"][1]
    if ".." not in path:  # the client library would resolve dot segments itself; raw below sends them as is
        kwargs = {"json": {"firstName": "X"}} if method == "PATCH" else {}
        refused(requests.request(method, srv.url(path), headers=bearer(admin_token), timeout=15, **kwargs))
    raw_resp = raw(srv, f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_token}\r\n"
                        f"Content-Length: 0\r\n\r\n".encode("latin-1"))
    assert 400 <= raw_resp.status < 500, raw_resp


# --- request smuggling shapes --------------------------------------------------------------------------

SMUGGLING = {
    "CL and TE": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    "duplicate differing CL": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "CL list": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2, 2\r\n\r\n{}",
    "CL sign": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: +2\r\n\r\n{}",
    "CL negative": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: -1\r\n\r\n{}",
    "TE not chunked": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "TE obfuscated": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE twice": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE on GET with CL": b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_request_smuggling_shapes_are_400_and_close_the_connection(srv, unchanged, name):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
        sock.sendall(SMUGGLING[name])
        resp = read_response(sock, timeout=15)
        assert 400 <= resp.status < 500, resp
        assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp.headers
        # Nothing after it is read as a second request: the server closes.
        sock.settimeout(15)
        rest = b""
        try:
            while chunk := sock.recv(65536):
                rest += chunk
        except ConnectionResetError:
            pass
        assert b"HTTP/1.1" not in rest, rest[:200]
    alive(srv)


# --- authorization: BOLA / BFLA ------------------------------------------------------------------------

def test_a_user_cannot_modify_or_delete_another_user_or_an_admin(srv, people, unchanged):
    alice_token = people["alice"][1]
    for target in ("bob", "admin"):
        tid, _, temail = people[target]
        url = srv.url(f"/v1/users/{tid}")
        refused(requests.put(url, json={"email": temail, "firstName": "Owned", "lastName": "X"},
                             headers=bearer(alice_token), timeout=15), {403})
        refused(requests.patch(url, json={"firstName": "Owned"}, headers=bearer(alice_token), timeout=15), {403})
        refused(requests.delete(url, headers=bearer(alice_token), timeout=15), {403})
    # Unknown ids look the same as others' ids to a non-admin: no probing which ids exist.
    ghost = srv.url("/v1/users/" + "0" * 24)
    refused(requests.delete(ghost, headers=bearer(alice_token), timeout=15), {403})
    refused(requests.patch(ghost, json={"firstName": "x"}, headers=bearer(alice_token), timeout=15), {403})


def test_a_user_cannot_create_users_or_change_any_role(srv, people, unchanged):
    aid, alice_token, aemail = people["alice"]
    bid = people["bob"][0]
    refused(requests.post(srv.url("/v1/users"), json=valid_registration(role="admin"), headers=bearer(alice_token),
                          timeout=15), {403})
    refused(requests.post(srv.url("/v1/users"), json=valid_registration(), headers=bearer(alice_token), timeout=15),
            {403})
    for role in ("admin", "ADMIN", "Admin", "user", "root", ["admin"], {"$ne": "user"}):
        refused(requests.patch(srv.url(f"/v1/users/{aid}"), json={"role": role}, headers=bearer(alice_token),
                               timeout=15), {400, 403})
        refused(requests.put(srv.url(f"/v1/users/{aid}"), json={"email": aemail, "firstName": "A", "lastName": "B",
                                                                "role": role},
                             headers=bearer(alice_token), timeout=15), {400, 403})
        refused(requests.patch(srv.url(f"/v1/users/{bid}"), json={"role": role}, headers=bearer(alice_token),
                               timeout=15), {400, 403})
    # Registration cannot pick a role either.
    refused(requests.post(srv.url("/v1/auth/register"), json=valid_registration(role="admin"), timeout=15), {400})


def test_a_forged_token_for_the_admin_is_refused(srv, people, unchanged):
    admin_id = people["admin"][0]
    forged = signed({"alg": "HS256", "typ": "JWT"}, claims_for(admin_id), secret="not-the-secret-0123456789abcdef!!")
    refused(requests.post(srv.url("/v1/users"), json=valid_registration(), headers=bearer(forged), timeout=15), {401})


def test_a_demoted_or_deleted_admin_loses_its_powers_at_once(srv):
    email = f"temp{uuid.uuid4().hex[:8]}@example.com"
    temp_id = srv.add_user(email, PASSWORD, admin=True)
    temp_token = srv.login(email, PASSWORD)
    boss_email = f"boss{uuid.uuid4().hex[:8]}@example.com"
    srv.add_user(boss_email, PASSWORD, admin=True)
    boss = bearer(srv.login(boss_email, PASSWORD))
    r = requests.patch(srv.url(f"/v1/users/{temp_id}"), json={"role": "user"}, headers=boss, timeout=15)
    assert r.status_code == 200, r.text
    refused(requests.post(srv.url("/v1/users"), json=valid_registration(), headers=bearer(temp_token), timeout=15),
            {403})
    assert requests.delete(srv.url(f"/v1/users/{temp_id}"), headers=boss, timeout=15).status_code == 204
    refused(requests.get(srv.url("/v1/users/me"), headers=bearer(temp_token), timeout=15), {401})


def test_server_is_healthy_after_everything(srv):
    alive(srv)
    assert "terminate called" not in srv.log() and "AddressSanitizer" not in srv.log()
