"""Errors and cross-cutting HTTP behaviour: 404/405/413/415/400 problem details, security headers, CORS,
response compression, /healthcheck (including 503), /v1/api-docs, spec <-> server route parity, and
that the server keeps serving after bad input.

Contract: docs/openapi.json (RFC 9457 problem details for every error).
"""
import gc
import gzip
import http.client
import json
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests

from usersd_harness import Server, assert_problem

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SPEC = json.loads(SPEC_PATH.read_text())
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PASSWORD = "correct horse battery"
APP_ORIGIN = "https://app.example.com"
EVIL_ORIGIN = "https://evil.example.com"
MAX_BODY = 64 * 1024


# --- helpers ------------------------------------------------------------------------------------------

def unique_email(prefix="e"):
    return f"{prefix}{uuid.uuid4().hex[:16]}@example.com"


def random_id():
    return uuid.uuid4().hex[:24]


def raw_post(server, path, data, content_type="application/json", headers=None):
    h = {} if content_type is None else {"Content-Type": content_type}
    h.update(headers or {})
    return requests.post(server.url(path), data=data, headers=h, timeout=15)


def problem(response, status):
    body = assert_problem(response, status)
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert body["status"] == status
    return body


def register_body(**overrides):
    body = {"email": unique_email(), "password": PASSWORD, "firstName": "Err", "lastName": "Tester"}
    body.update(overrides)
    return body


def nested(depth, inner="1"):
    """A JSON text whose nesting depth (objects and arrays) is exactly `depth`."""
    return "[" * depth + inner + "]" * depth


def spec_operations():
    for path, item in SPEC["paths"].items():
        for method in item:
            if method in HTTP_METHODS:
                yield path, method.upper()


def spec_methods(path):
    return {m.upper() for m in SPEC["paths"][path] if m in HTTP_METHODS}


def fill(path):
    return re.sub(r"\{[^}]+\}", random_id(), path)


@pytest.fixture(scope="module")
def token(shared_server):
    email = unique_email("tok")
    assert shared_server.register(email).status_code == 201
    return shared_server.login(email)


@pytest.fixture(scope="module")
def auth(shared_server, token):
    return shared_server.auth(token)


@pytest.fixture(scope="module")
def admin_auth(shared_server):
    email = unique_email("admin")
    shared_server.add_user(email, admin=True)
    return shared_server.auth(shared_server.login(email))


@pytest.fixture
def make_server(tmp_path):
    """Starts Servers with custom config; stopped after the test."""
    started = []

    def make(config=None):
        directory = tmp_path / f"srv{len(started)}"
        directory.mkdir()
        srv = Server(directory, config=config)
        started.append(srv)
        return srv.start()

    yield make
    gc.collect()
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("cors"), config={"http": {"cors_allowed_origins": [APP_ORIGIN]}}).start()
    yield srv
    gc.collect()
    srv.stop()


# --- 404 / 405 / HEAD ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/v1/user", "/v1/users/x/y", "/v2/users",
                                  "/v1/auth", "/v1/auth/logout", "/healthcheck/x", "/v1/api-docs/other",
                                  "/V1/USERS", "/v1/users/me/extra"])
def test_unknown_route_is_404_problem(shared_server, auth, path):
    problem(requests.get(shared_server.url(path), headers=auth, timeout=10), 404)
    problem(requests.get(shared_server.url(path), timeout=10), 404)


@pytest.mark.parametrize("method,path,expected", [
    ("DELETE", "/v1/users", {"GET", "POST"}),
    ("PUT", "/v1/users", {"GET", "POST"}),
    ("PATCH", "/v1/users", {"GET", "POST"}),
    ("GET", "/v1/auth/login", {"POST"}),
    ("PUT", "/v1/auth/register", {"POST"}),
    ("POST", "/healthcheck", {"GET"}),
    ("DELETE", "/v1/api-docs", {"GET"}),
    ("POST", "/v1/users/me", {"GET"}),
    ("DELETE", "/v1/users/me", {"GET"}),
    ("POST", "/v1/users/65f0c0ffee0000000000abcd", {"GET", "PUT", "PATCH", "DELETE"}),
])
def test_wrong_method_is_405_with_allow(shared_server, auth, method, path, expected):
    r = requests.request(method, shared_server.url(path), headers=auth, timeout=10)
    problem(r, 405)
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert expected <= allow, allow
    assert method not in allow
    assert allow - {"HEAD", "OPTIONS"} == expected


def test_wrong_method_is_405_even_without_credentials(shared_server):
    r = requests.delete(shared_server.url("/v1/users"), timeout=10)
    problem(r, 405)
    assert "GET" in r.headers["Allow"] and "POST" in r.headers["Allow"]


def test_head_healthcheck(shared_server):
    r = requests.head(shared_server.url("/healthcheck"), timeout=10)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Type"].startswith("application/json")


def test_head_users_needs_auth_and_has_no_body(shared_server, auth):
    r = requests.head(shared_server.url("/v1/users"), timeout=10)
    assert r.status_code == 401 and r.content == b""
    r = requests.head(shared_server.url("/v1/users"), headers=auth, timeout=10)
    assert r.status_code == 200 and r.content == b""


def test_uri_too_long_is_a_problem(shared_server):
    r = requests.get(shared_server.url("/v1/users?x=" + "a" * 20000), timeout=10)
    assert 400 <= r.status_code < 500
    problem(r, r.status_code)
    assert requests.get(shared_server.url("/healthcheck"), timeout=10).status_code == 200


def _raw_exchange(server, data):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length is None or len(rest) >= int(length.group(1)):
                    break
        return b"".join(chunks)


def test_garbage_request_line_is_400_problem(shared_server):
    response = _raw_exchange(shared_server, b"GARBAGE\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b"application/problem+json" in response
    assert requests.get(shared_server.url("/healthcheck"), timeout=10).status_code == 200


def test_trace_is_not_echoed(shared_server, token):
    response = _raw_exchange(shared_server, (
        "TRACE /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\n\r\n").encode())
    status = int(response.split(b" ", 2)[1])
    assert status in (400, 404, 405, 501), response[:300]
    assert token.encode() not in response  # no cross-site tracing echo of credentials


# --- 415 ----------------------------------------------------------------------------------------------

BODY_OPERATIONS = [
    ("POST", "/v1/auth/register", False),
    ("POST", "/v1/auth/login", False),
    ("POST", "/v1/users", True),
    ("PUT", "/v1/users/me-placeholder", True),
    ("PATCH", "/v1/users/me-placeholder", True),
]


def _send(server, auth, method, path, needs_auth, data, headers):
    h = dict(headers)
    if needs_auth:
        h.update(auth)
    return requests.request(method, server.url(path), data=data, headers=h, timeout=15)


@pytest.fixture
def own_path(shared_server):
    """A fresh user (so PUT/PATCH pass authorization and reach body checks) and its auth headers."""
    email = unique_email("own")
    r = shared_server.register(email)
    assert r.status_code == 201
    return r.headers["Location"], shared_server.auth(shared_server.login(email))


def _target(path, own_path):
    return own_path[0] if "placeholder" in path else path


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/jsonx", "application/json-seq", "text/json",
    "application/json; charset=latin1", "application/json; charset=iso-8859-1", "application/json; charset=utf-16",
], ids=lambda c: c.replace("/", "_"))
@pytest.mark.parametrize("method,path,needs_auth", BODY_OPERATIONS, ids=lambda v: str(v))
def test_unsupported_content_type_is_415(shared_server, own_path, method, path, needs_auth, content_type):
    target = _target(path, own_path)
    body = json.dumps(register_body())
    r = _send(shared_server, own_path[1], method, target, needs_auth, body, {"Content-Type": content_type})
    problem(r, 415)


@pytest.mark.parametrize("method,path,needs_auth", BODY_OPERATIONS, ids=lambda v: str(v))
def test_missing_content_type_is_415(shared_server, own_path, method, path, needs_auth):
    target = _target(path, own_path)
    r = _send(shared_server, own_path[1], method, target, needs_auth, json.dumps(register_body()).encode(), {})
    assert "Content-Type" not in r.request.headers
    problem(r, 415)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP"])
@pytest.mark.parametrize("method,path,needs_auth", BODY_OPERATIONS, ids=lambda v: str(v))
def test_compressed_request_body_is_415(shared_server, own_path, method, path, needs_auth, encoding):
    target = _target(path, own_path)
    data = gzip.compress(json.dumps(register_body()).encode())
    r = _send(shared_server, own_path[1], method, target, needs_auth, data,
              {"Content-Type": "application/json", "Content-Encoding": encoding})
    problem(r, 415)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          'application/json; charset="UTF-8"', "Application/JSON",
                                          "application/json ; charset=UTF-8"])
def test_json_content_type_variants_are_accepted(shared_server, content_type):
    r = raw_post(shared_server, "/v1/auth/login", json.dumps({"email": unique_email(), "password": "x" * 10}),
                 content_type=content_type)
    assert r.status_code == 401, r.text  # reached the credential check: not 415


def test_identity_content_encoding_is_accepted(shared_server):
    r = raw_post(shared_server, "/v1/auth/login", json.dumps({"email": unique_email(), "password": "x" * 10}),
                 headers={"Content-Encoding": "identity"})
    assert r.status_code == 401, r.text


# --- 413 ----------------------------------------------------------------------------------------------

def _padded_login(total_size):
    """A valid JSON login body of exactly total_size bytes (padding in an unknown field)."""
    base = {"email": "pad@example.com", "password": "x" * 10, "pad": ""}
    overhead = len(json.dumps(base, separators=(",", ":")))
    base["pad"] = "a" * (total_size - overhead)
    data = json.dumps(base, separators=(",", ":")).encode()
    assert len(data) == total_size
    return data


@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/auth/register"])
def test_body_over_64k_is_413_and_server_keeps_serving(shared_server, path):
    r = raw_post(shared_server, path, _padded_login(MAX_BODY + 1))
    problem(r, 413)
    health = requests.get(shared_server.url("/healthcheck"), timeout=10)
    assert health.status_code == 200


def test_much_larger_body_is_413(shared_server):
    try:
        r = raw_post(shared_server, "/v1/auth/login", b"{" + b" " * (4 * 1024 * 1024) + b"}")
    except requests.ConnectionError:
        pass  # the server may close the connection before reading the whole body; that is fine
    else:
        problem(r, 413)
    assert requests.get(shared_server.url("/healthcheck"), timeout=10).status_code == 200


def test_chunked_body_over_64k_is_413(shared_server):
    def chunks():
        yield b'{"email":"a@example.com","password":"xxxxxxxxxx","pad":"'
        for _ in range(20):
            yield b"a" * 4096
        yield b'"}'

    try:
        r = requests.post(shared_server.url("/v1/auth/login"), data=chunks(),
                          headers={"Content-Type": "application/json"}, timeout=15)
    except requests.ConnectionError:
        pytest.fail("connection dropped instead of a 413 response")
    problem(r, 413)
    assert requests.get(shared_server.url("/healthcheck"), timeout=10).status_code == 200


def test_body_of_exactly_64k_is_not_413(shared_server):
    r = raw_post(shared_server, "/v1/auth/login", _padded_login(MAX_BODY))
    body = problem(r, 400)  # the unknown "pad" field: a validation error, not "too large"
    assert {e["field"] for e in body["errors"]} == {"pad"}


# --- 400: bodies that are not a JSON object -----------------------------------------------------------

MALFORMED = [
    ("truncated", b'{"email": '),
    ("single quotes", b"{'email': 'a@example.com'}"),
    ("trailing garbage", b'{"email": "a@example.com", "password": "xxxxxxxxxx"} x'),
    ("trailing comma", b'{"email": "a@example.com",}'),
    ("NaN", b'{"email": NaN}'),
    ("comment", b'{"email": "a@example.com" /* hi */}'),
    ("bare word", b"hello"),
    ("unterminated string", b'{"email": "a@example.com'),
    ("invalid utf-8 in value", b'{"email": "\xff\xfe@example.com", "password": "xxxxxxxxxx"}'),
    ("invalid utf-8 in key", b'{"\xc3\x28": "x", "email": "a@example.com", "password": "xxxxxxxxxx"}'),
    ("overlong utf-8", b'{"email": "\xc0\xafa@example.com", "password": "xxxxxxxxxx"}'),
    ("utf-16 surrogate bytes", b'{"email": "\xed\xa0\x80@example.com", "password": "xxxxxxxxxx"}'),
    ("lone surrogate escape", b'{"email": "\\ud800@example.com", "password": "xxxxxxxxxx"}'),
    ("raw control char", b'{"email": "a\x01@example.com", "password": "xxxxxxxxxx"}'),
    ("nul byte then garbage", b'{"firstName": "Nul"}\x00garbage]]'),
    ("depth 33", nested(33).encode()),
    ("depth 33 in a field", ('{"email": "a@example.com", "x": ' + nested(32) + "}").encode()),
    ("depth 30000", nested(30000).encode()),
    ("unbalanced deep", b"[" * 50000),
    ("objects depth 40", ('{"a":' * 40 + "1" + "}" * 40).encode()),
]


@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/auth/login"])
@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_json_is_400(shared_server, path, data):
    r = raw_post(shared_server, path, data)
    problem(r, 400)


@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_json_on_authenticated_routes_is_400(shared_server, own_path, admin_auth, data):
    location, headers = own_path
    for method, path, ctype, h in (("POST", "/v1/users", "application/json", admin_auth),
                                   ("PUT", location, "application/json", headers),
                                   ("PATCH", location, "application/merge-patch+json", headers)):
        r = requests.request(method, shared_server.url(path), data=data,
                             headers={**h, "Content-Type": ctype}, timeout=15)
        problem(r, 400)


def test_nul_byte_does_not_end_the_json_text(shared_server):
    """Bytes after a NUL are still part of the body: the whole body must be one JSON text."""
    email = unique_email("nul")
    assert shared_server.register(email).status_code == 201
    good = json.dumps({"email": email, "password": PASSWORD}).encode()
    assert raw_post(shared_server, "/v1/auth/login", good).status_code == 200
    for data in (good + b"\x00", good + b"\x00garbage{{{", good + b" \x00 ]]]"):
        problem(raw_post(shared_server, "/v1/auth/login", data), 400)


@pytest.mark.parametrize("data", [b"[]", b'["a@example.com"]', b'"a string"', b"42", b"null", b"true", b"{}x"],
                         ids=["array", "array of string", "string", "number", "null", "bool", "object+garbage"])
@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/auth/login"])
def test_top_level_non_object_is_400(shared_server, path, data):
    problem(raw_post(shared_server, path, data), 400)


@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/auth/login"])
def test_empty_body_is_400(shared_server, path):
    r = raw_post(shared_server, path, b"")
    problem(r, 400)


def test_empty_body_on_put_and_patch_is_400(shared_server, own_path):
    location, headers = own_path
    for method, ctype in (("PUT", "application/json"), ("PATCH", "application/merge-patch+json")):
        r = requests.request(method, shared_server.url(location), data=b"",
                             headers={**headers, "Content-Type": ctype}, timeout=10)
        problem(r, 400)


@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/auth/login"])
def test_depth_32_is_parsed_and_reported_as_a_field_error(shared_server, path):
    # The object itself is level 1, so the value adds 31 levels: 32 in all, the deepest accepted.
    data = '{"email": "a@example.com", "password": "xxxxxxxxxx", "deep": ' + nested(31) + "}"
    body = problem(raw_post(shared_server, path, data), 400)
    assert "errors" in body, body  # a validation problem, not a parse error
    assert "deep" in {e["field"] for e in body["errors"]}


def test_brackets_inside_strings_do_not_count_as_nesting(shared_server):
    body = register_body(firstName='x\\"' + "[" * 40, lastName="{" * 40 + "\\", state="]" * 5 + "[" * 50)
    r = requests.post(shared_server.url("/v1/auth/register"), json=body, timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["firstName"] == body["firstName"]


def test_unicode_escapes_are_decoded(shared_server):
    data = ('{"email": "' + unique_email() + '", "password": "' + PASSWORD + '", '
            '"firstName": "Z\\u00fcrich \\ud83d\\ude00", "lastName": "Test"}')
    r = raw_post(shared_server, "/v1/auth/register", data.encode())
    assert r.status_code == 201, r.text
    assert r.json()["firstName"] == "Zürich \U0001F600"


def test_server_still_healthy_after_bad_input(shared_server):
    for data in (nested(200000).encode(), b"\xff" * 1000, b'{"a":' * 10000):
        r = raw_post(shared_server, "/v1/auth/login", data)
        assert r.status_code < 500, r.text
    assert requests.get(shared_server.url("/healthcheck"), timeout=10).json()["status"] == "ok"


# --- problem details shape ----------------------------------------------------------------------------

def test_problem_bodies_have_type_title_status(shared_server, auth):
    responses = [
        requests.get(shared_server.url("/nope"), timeout=10),
        requests.delete(shared_server.url("/v1/users"), timeout=10),
        requests.get(shared_server.url("/v1/users"), timeout=10),
        requests.get(shared_server.url("/v1/users?limit=0"), headers=auth, timeout=10),
        requests.get(shared_server.url(f"/v1/users/{random_id()}"), headers=auth, timeout=10),
        raw_post(shared_server, "/v1/auth/login", b"x", content_type="text/plain"),
        raw_post(shared_server, "/v1/auth/login", b"{"),
        raw_post(shared_server, "/v1/auth/login", _padded_login(MAX_BODY + 10)),
    ]
    for r in responses:
        assert r.status_code >= 400
        body = problem(r, r.status_code)
        if "detail" in body:
            assert isinstance(body["detail"], str)


# --- security headers ---------------------------------------------------------------------------------

def _sample_responses(server, auth):
    return {
        "healthcheck 200": requests.get(server.url("/healthcheck"), timeout=10),
        "docs json": requests.get(server.url("/v1/api-docs"), timeout=10),
        "docs html": requests.get(server.url("/v1/api-docs"), headers={"Accept": "text/html"}, timeout=10),
        "me 200": requests.get(server.url("/v1/users/me"), headers=auth, timeout=10),
        "401": requests.get(server.url("/v1/users/me"), timeout=10),
        "404": requests.get(server.url("/nope"), timeout=10),
        "405": requests.delete(server.url("/v1/users"), timeout=10),
        "options 204": requests.options(server.url("/v1/users"), timeout=10),
        "400": raw_post(server, "/v1/auth/login", b"{"),
        "413": raw_post(server, "/v1/auth/login", _padded_login(MAX_BODY + 1)),
        "415": raw_post(server, "/v1/auth/login", b"{}", content_type="text/plain"),
    }


def test_security_headers_on_every_response(shared_server, auth):
    for name, r in _sample_responses(shared_server, auth).items():
        h = r.headers
        assert h.get("X-Content-Type-Options", "").lower() == "nosniff", (name, h)
        assert h.get("X-Frame-Options", "").upper() in ("DENY", "SAMEORIGIN"), (name, h)
        csp = h.get("Content-Security-Policy", "")
        assert csp and "frame-ancestors" in csp, (name, h)
        assert "script-src" not in csp or "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0], csp
        assert h.get("Referrer-Policy"), (name, h)


def test_no_server_version_disclosed(shared_server, auth):
    for name, r in _sample_responses(shared_server, auth).items():
        server = r.headers.get("Server")
        assert server is None or not re.search(r"\d", server), (name, server)
        powered = r.headers.get("X-Powered-By")
        assert powered is None or not re.search(r"\d", powered), (name, powered)


def test_api_responses_are_not_cacheable(shared_server, auth):
    r = requests.get(shared_server.url("/v1/users/me"), headers=auth, timeout=10)
    assert "no-store" in r.headers.get("Cache-Control", "") or "private" in r.headers.get("Cache-Control", "")


# --- CORS ---------------------------------------------------------------------------------------------

def _access_control(headers):
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("path,method", [("/v1/users", "GET"), ("/v1/users", "POST"),
                                         ("/v1/users/65f0c0ffee0000000000abcd", "PATCH"),
                                         ("/v1/auth/login", "POST")])
def test_cors_preflight_from_allowed_origin(cors_server, path, method):
    r = requests.options(cors_server.url(path), headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"}, timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    methods = {m.strip().upper() for m in r.headers.get("Access-Control-Allow-Methods", "").split(",")}
    assert method in methods, r.headers
    allowed_headers = {h.strip().lower() for h in r.headers.get("Access-Control-Allow-Headers", "").split(",")}
    assert {"authorization", "content-type"} <= allowed_headers, r.headers
    assert "Origin" in r.headers.get("Vary", "")
    assert r.headers.get("Access-Control-Allow-Origin") != "*"


def test_cors_simple_request_from_allowed_origin(cors_server):
    r = requests.get(cors_server.url("/healthcheck"), headers={"Origin": APP_ORIGIN}, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    assert "Origin" in r.headers.get("Vary", "")
    # Browsers may read Location and ETag only if they are exposed.
    exposed = {h.strip().lower() for h in r.headers.get("Access-Control-Expose-Headers", "").split(",")}
    assert {"location", "etag"} <= exposed, r.headers


def test_cors_error_responses_from_allowed_origin_carry_acao(cors_server):
    r = requests.get(cors_server.url("/v1/users/me"), headers={"Origin": APP_ORIGIN}, timeout=10)
    assert r.status_code == 401
    assert r.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN


@pytest.mark.parametrize("origin", [EVIL_ORIGIN, "https://app.example.com.evil.com", "http://app.example.com",
                                    "https://app.example.com:8443", "null"])
def test_cors_other_origins_get_no_cors_headers(cors_server, origin):
    pre = requests.options(cors_server.url("/v1/users"), headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"}, timeout=10)
    assert _access_control(pre.headers) == {}, pre.headers
    simple = requests.get(cors_server.url("/healthcheck"), headers={"Origin": origin}, timeout=10)
    assert simple.status_code == 200
    assert _access_control(simple.headers) == {}, simple.headers


def test_cors_disabled_by_default(shared_server):
    r = requests.options(shared_server.url("/v1/users"), headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"}, timeout=10)
    assert _access_control(r.headers) == {}
    r = requests.get(shared_server.url("/healthcheck"), headers={"Origin": APP_ORIGIN}, timeout=10)
    assert _access_control(r.headers) == {}


# --- response compression -----------------------------------------------------------------------------

def _raw_get(server, path, accept_encoding, extra=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": accept_encoding, **(extra or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_gzip_response(shared_server):
    status, headers, raw = _raw_get(shared_server, "/v1/api-docs/openapi.json", "gzip")
    assert status == 200
    assert headers.get("content-encoding") == "gzip", headers
    doc = json.loads(gzip.decompress(raw))
    assert doc["openapi"].startswith("3.")
    # requests decodes transparently and keeps the header.
    r = requests.get(shared_server.url("/v1/api-docs/openapi.json"), headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert r.headers.get("Content-Encoding") == "gzip" and r.json() == doc


def test_brotli_response_when_offered(shared_server):
    status, headers, raw = _raw_get(shared_server, "/v1/api-docs/openapi.json", "br")
    assert status == 200
    _, _, plain = _raw_get(shared_server, "/v1/api-docs/openapi.json", "identity")
    if headers.get("content-encoding") == "br":
        assert len(raw) < len(plain)
        try:
            import brotli  # noqa: PLC0415 - optional
        except ImportError:
            return
        assert json.loads(brotli.decompress(raw)) == json.loads(plain)
    else:
        assert "content-encoding" not in headers or headers["content-encoding"] == "identity", headers
        assert json.loads(raw) == json.loads(plain)


def test_identity_when_compression_not_accepted(shared_server):
    status, headers, raw = _raw_get(shared_server, "/v1/api-docs/openapi.json", "identity")
    assert status == 200
    assert headers.get("content-encoding", "identity") == "identity", headers
    assert json.loads(raw)["openapi"].startswith("3.")


def test_gzip_refused_with_q_zero_is_not_used(shared_server):
    status, headers, raw = _raw_get(shared_server, "/v1/api-docs/openapi.json", "gzip;q=0, identity")
    assert status == 200
    assert headers.get("content-encoding", "identity") == "identity", headers
    assert json.loads(raw)["openapi"].startswith("3.")


# --- /healthcheck -------------------------------------------------------------------------------------

def test_healthcheck_ok(shared_server):
    r = requests.get(shared_server.url("/healthcheck"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "ok" and body["store"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert set(body) <= {"status", "store", "version", "uptimeSeconds", "pid"}
    if "uptimeSeconds" in body:
        assert isinstance(body["uptimeSeconds"], int) and body["uptimeSeconds"] >= 0
    if "pid" in body:
        assert isinstance(body["pid"], int) and body["pid"] >= 1


def test_healthcheck_needs_no_credentials_and_ignores_bad_ones(shared_server):
    r = requests.get(shared_server.url("/healthcheck"), headers={"Authorization": "Bearer garbage"}, timeout=10)
    assert r.status_code == 200


def _assert_unavailable(server):
    r = requests.get(server.url("/healthcheck"), timeout=10)
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "unavailable" and body["store"] == "unavailable", body
    assert isinstance(body.get("version"), str)
    assert "usersd.db" not in r.text and str(server.tmp) not in r.text  # no file names leak


@pytest.mark.sqlite_only
def test_healthcheck_503_when_database_file_deleted(server):
    assert requests.get(server.url("/healthcheck"), timeout=10).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(str(server.db_path) + suffix).unlink(missing_ok=True)
    _assert_unavailable(server)


@pytest.mark.sqlite_only
def test_healthcheck_503_when_database_file_replaced(server):
    assert requests.get(server.url("/healthcheck"), timeout=10).status_code == 200
    replacement = server.db_path.with_name("replacement.db")
    replacement.write_bytes(b"this is not a database")
    replacement.replace(server.db_path)
    _assert_unavailable(server)


# --- /v1/api-docs -------------------------------------------------------------------------------------

def test_api_docs_json_by_default(shared_server):
    for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        r = requests.get(shared_server.url("/v1/api-docs"), headers=headers, timeout=10)
        assert r.status_code == 200, headers
        assert r.headers["Content-Type"].startswith("application/json"), headers
        assert r.json()["openapi"].startswith("3.")


@pytest.mark.parametrize("accept", ["text/html", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"])
def test_api_docs_html_when_preferred(shared_server, accept):
    r = requests.get(shared_server.url("/v1/api-docs"), headers={"Accept": accept}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<html" in r.text.lower()
    for path in SPEC["paths"]:
        assert path in r.text, path
    assert "Accept" in r.headers.get("Vary", "")
    assert "<script" not in r.text.lower()


@pytest.mark.parametrize("accept", ["text/html;q=0.1, application/json", "text/html;q=0, application/json;q=0.5",
                                    "application/json, text/html;q=0.5"])
def test_api_docs_respects_accept_quality_values(shared_server, accept):
    r = requests.get(shared_server.url("/v1/api-docs"), headers={"Accept": accept}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json"), (accept, r.headers["Content-Type"])


def test_openapi_json_document(shared_server):
    r = requests.get(shared_server.url("/v1/api-docs/openapi.json"), headers={"Accept": "text/html"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert re.match(r"^3\.\d+\.\d+$", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert set(doc["paths"]) == set(SPEC["paths"])
    assert requests.get(shared_server.url("/v1/api-docs"), timeout=10).json() == doc


# --- spec <-> server ----------------------------------------------------------------------------------

def _request_for(server, auth, path, method):
    url = server.url(fill(path))
    kwargs = {"headers": dict(auth), "timeout": 10}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return requests.request(method, url, **kwargs)


@pytest.mark.parametrize("path,method", list(spec_operations()), ids=lambda v: v)
def test_every_spec_operation_is_served(shared_server, auth, path, method):
    r = _request_for(shared_server, auth, path, method)
    assert r.status_code != 405, (method, path, r.headers.get("Allow"))
    if r.status_code == 404:
        detail = r.json().get("detail", "")
        assert "no such resource" not in detail, (method, path, r.text)
        assert "{" in path, "a fixed path answered 404"
    assert r.status_code < 500, r.text
    declared = set(SPEC["paths"][path][method.lower()]["responses"])
    assert str(r.status_code) in declared, (method, path, r.status_code, declared)


@pytest.mark.parametrize("path", list(SPEC["paths"]))
def test_served_methods_equal_spec_methods(shared_server, path):
    r = requests.options(shared_server.url(fill(path)), timeout=10)
    assert r.status_code in (200, 204), r.text
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert allow - {"HEAD", "OPTIONS"} == spec_methods(path), allow
    if "GET" in allow:
        assert "HEAD" in allow
        head = requests.head(shared_server.url(fill(path)), timeout=10)
        assert head.status_code != 405


@pytest.mark.parametrize("path", ["/v1/user", "/v1/users/x/y", "/v2/users", "/v1/users/me/x", "/v1/auth/me",
                                  "/api-docs", "/v1/healthcheck"])
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS", "DELETE"])
def test_paths_not_in_spec_are_404(shared_server, auth, path, method):
    r = requests.request(method, shared_server.url(path), headers=auth, timeout=10)
    problem(r, 404)


def test_responses_match_spec_schemas(shared_server):
    import jsonschema_rs  # comes with schemathesis in the test venv; missing means a broken venv: fail

    def check(schema_name, response):
        validator = jsonschema_rs.Draft4Validator({"$ref": f"#/components/schemas/{schema_name}",
                                                   "components": SPEC["components"]})
        errors = [str(e) for e in validator.iter_errors(response.json())]
        assert not errors, (schema_name, response.request.method, response.request.url, errors)

    email = unique_email("schema")
    reg = shared_server.register(email, phone="+1 555", country="X", state="Y")
    check("User", reg)
    login = requests.post(shared_server.url("/v1/auth/login"), json={"email": email, "password": PASSWORD},
                          timeout=10)
    check("Token", login)
    auth = shared_server.auth(login.json()["token"])
    check("User", requests.get(shared_server.url("/v1/users/me"), headers=auth, timeout=10))
    for query in ("", "?limit=1", "?page=1&limit=2", "?page=2&limit=1"):
        page = requests.get(shared_server.url("/v1/users" + query), headers=auth, timeout=10)
        check("UserPage", page)
        nxt = page.json()["_links"].get("next")
        if nxt:
            check("UserPage", requests.get(shared_server.url(nxt["href"]), headers=auth, timeout=10))
    check("Health", requests.get(shared_server.url("/healthcheck"), timeout=10))
    for r in (requests.get(shared_server.url("/nope"), timeout=10),
              requests.get(shared_server.url("/v1/users?limit=0"), headers=auth, timeout=10),
              requests.post(shared_server.url("/v1/auth/login"), json={"email": email, "password": "wrong pw"},
                            timeout=10),
              shared_server.register(email)):
        check("Problem", r)


# --- shutdown -----------------------------------------------------------------------------------------

def test_sigterm_with_idle_keep_alive_connection_exits_promptly(make_server):
    """An idle keep-alive connection has no request in flight; SIGTERM must not wait for it."""
    srv = make_server()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        response = sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200"), response[:100]
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(10)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            pass
        elapsed = time.monotonic() - start
        assert srv.proc.poll() is not None and elapsed < 10, (
            f"usersd still running {elapsed:.1f} s after SIGTERM with one idle keep-alive connection\n"
            + srv.log()[-3000:])
    finally:
        sock.close()
        srv.stop()
