"""/v1/users: list (cursor and page pagination), read, conditional GET, admin create, PUT, PATCH, DELETE.

Contract: docs/openapi.json. Tests on the module's shared server make their own uuid-based users, so
they are independent of each other and of their order; pagination gets its own server with exactly
25 users.
"""
import gc
import json
import re
import uuid
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from usersd_harness import Server, assert_problem

PASSWORD = "correct horse battery"
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
USER_KEYS = {"id", "email", "firstName", "lastName", "phone", "country", "state", "role", "createdAt",
             "updatedAt", "_links"}
PAGE_KEYS = {"items", "total", "limit", "page", "_links"}
UNKNOWN_ID = "65f0c0ffee0000000000abcd"
MERGE_PATCH = "application/merge-patch+json"


# --- helpers ------------------------------------------------------------------------------------------

def unique_email(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:16]}@example.com"


class Account:
    def __init__(self, server, user_id, email, token):
        self.server, self.id, self.email, self.token = server, user_id, email, token

    @property
    def headers(self):
        return self.server.auth(self.token)

    def request(self, method, path, body=None, headers=None, content_type="application/json"):
        h = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body)
            h["Content-Type"] = content_type
        h.update(headers or {})
        return requests.request(method, self.server.url(path), data=data, headers=h, timeout=10)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


def register(server, **extra):
    email = extra.pop("email", None) or unique_email()
    r = server.register(email, **extra)
    assert r.status_code == 201, r.text
    return Account(server, r.json()["id"], email, server.login(email))


def cli_account(server, admin=False, prefix="adm"):
    email = unique_email(prefix)
    user_id = server.add_user(email, admin=admin)
    assert OBJECT_ID.match(user_id), user_id
    return Account(server, user_id, email, server.login(email))


def user_path(user_id):
    return f"/v1/users/{user_id}"


def assert_user(body):
    assert set(body) <= USER_KEYS, f"unexpected members {set(body) - USER_KEYS}"
    for key in ("id", "email", "firstName", "lastName", "role", "createdAt", "updatedAt", "_links"):
        assert key in body, body
    assert OBJECT_ID.match(body["id"])
    assert body["role"] in ("user", "admin")
    assert body["_links"] == {"self": {"href": user_path(body["id"])}}
    for stamp in ("createdAt", "updatedAt"):
        datetime.fromisoformat(body[stamp].replace("Z", "+00:00"))
    assert "password" not in body and "passwordHash" not in body
    return body


def validation_fields(response):
    body = assert_problem(response, 400)
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for e in errors:
        assert set(e) == {"field", "message"} and e["message"], e
    return {e["field"] for e in errors}


@pytest.fixture(scope="module")
def admin(shared_server):
    return cli_account(shared_server, admin=True)


@pytest.fixture
def alice(shared_server):
    return register(shared_server, phone="+1 555 0100", country="Wonderland", state="Looking Glass")


@pytest.fixture
def bob(shared_server):
    return register(shared_server)


# --- GET /v1/users: pagination ----------------------------------------------------------------------

TOTAL_USERS = 25


@pytest.fixture(scope="module")
def paged(tmp_path_factory):
    """A server holding exactly 25 users (one of them the admin who lists them), plus that admin."""
    srv = Server(tmp_path_factory.mktemp("paged")).start()
    ids = {srv.add_user(f"page{i:02d}@example.com", admin=(i == 0)) for i in range(TOTAL_USERS)}
    assert len(ids) == TOTAL_USERS
    caller = Account(srv, None, "page00@example.com", srv.login("page00@example.com"))
    yield srv, caller, ids
    gc.collect()
    srv.stop()


def get_page(account, href):
    assert href.startswith("/v1/users"), href
    r = account.get(href)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) <= PAGE_KEYS, body.keys()
    assert isinstance(body["items"], list)
    assert "self" in body["_links"] and "first" in body["_links"], body["_links"]
    assert set(body["_links"]) <= {"self", "first", "next", "prev"}
    for name, link in body["_links"].items():
        assert set(link) == {"href"} and link["href"].startswith("/v1/users"), (name, link)
    for item in body["items"]:
        assert_user(item)
    return body


def ids_of(body):
    return [item["id"] for item in body["items"]]


def test_list_default_limit_is_20(paged):
    _, caller, ids = paged
    body = get_page(caller, "/v1/users")
    assert body["limit"] == 20
    assert body["total"] == TOTAL_USERS
    assert len(body["items"]) == 20
    assert set(ids_of(body)) <= ids
    assert "next" in body["_links"]
    assert "prev" not in body["_links"]
    # self and first lead to the same page here.
    assert ids_of(get_page(caller, body["_links"]["self"]["href"])) == ids_of(body)
    assert ids_of(get_page(caller, body["_links"]["first"]["href"])) == ids_of(body)


def test_list_cursor_walk_forward_and_back(paged):
    _, caller, ids = paged
    forward = []
    body = get_page(caller, "/v1/users?limit=10")
    while True:
        assert body["limit"] == 10 and body["total"] == TOTAL_USERS
        assert "page" not in body
        forward.append(ids_of(body))
        if "next" not in body["_links"]:
            break
        assert len(forward) < 10, "next links never end"
        body = get_page(caller, body["_links"]["next"]["href"])
    assert [len(p) for p in forward] == [10, 10, 5]
    seen = [i for page in forward for i in page]
    assert len(seen) == len(set(seen)), "a user appeared on two pages"
    assert set(seen) == ids

    # The last page came from a cursor, so it links back; walk to the start.
    backward = [ids_of(body)]
    while "prev" in body["_links"]:
        assert len(backward) < 10, "prev links never end"
        body = get_page(caller, body["_links"]["prev"]["href"])
        backward.append(ids_of(body))
    assert list(reversed(backward)) == forward
    assert "next" in body["_links"]  # the first page, reached backwards, still offers next

    # first always leads back to the first page.
    assert ids_of(get_page(caller, body["_links"]["first"]["href"])) == forward[0]


def test_list_cursor_self_link_reproduces_the_page(paged):
    _, caller, _ = paged
    first = get_page(caller, "/v1/users?limit=7")
    second = get_page(caller, first["_links"]["next"]["href"])
    again = get_page(caller, second["_links"]["self"]["href"])
    assert ids_of(again) == ids_of(second)
    assert "prev" in second["_links"]


def test_list_page_numbers(paged):
    _, caller, ids = paged
    pages = {n: get_page(caller, f"/v1/users?page={n}&limit=10") for n in (1, 2, 3)}
    cursor_walk = []
    body = get_page(caller, "/v1/users?limit=10")
    cursor_walk.append(ids_of(body))
    while "next" in body["_links"]:
        body = get_page(caller, body["_links"]["next"]["href"])
        cursor_walk.append(ids_of(body))

    two = pages[2]
    assert two["page"] == 2 and two["limit"] == 10 and two["total"] == TOTAL_USERS
    assert len(two["items"]) == 10
    assert ids_of(two) == cursor_walk[1]
    for rel in ("self", "first", "next", "prev"):
        assert rel in two["_links"], two["_links"]
    assert ids_of(get_page(caller, two["_links"]["next"]["href"])) == ids_of(pages[3])
    assert ids_of(get_page(caller, two["_links"]["prev"]["href"])) == ids_of(pages[1])
    assert ids_of(get_page(caller, two["_links"]["first"]["href"])) == ids_of(pages[1])
    assert ids_of(get_page(caller, two["_links"]["self"]["href"])) == ids_of(two)
    assert "prev" not in pages[1]["_links"]
    assert "next" not in pages[3]["_links"] and len(pages[3]["items"]) == 5
    all_ids = [i for n in (1, 2, 3) for i in ids_of(pages[n])]
    assert len(all_ids) == len(set(all_ids)) and set(all_ids) == ids


def test_list_page_beyond_the_end_is_empty(paged):
    _, caller, _ = paged
    body = get_page(caller, "/v1/users?page=50&limit=10")
    assert body["items"] == [] and body["total"] == TOTAL_USERS
    assert "next" not in body["_links"]


@pytest.mark.parametrize("limit", [1, 25, 100])
def test_list_limit_bounds_accepted(paged, limit):
    _, caller, _ = paged
    body = get_page(caller, f"/v1/users?limit={limit}")
    assert body["limit"] == limit
    assert len(body["items"]) == min(limit, TOTAL_USERS)
    assert ("next" in body["_links"]) == (limit < TOTAL_USERS)


BAD_QUERIES = [
    ("limit=0", {"limit"}),
    ("limit=101", {"limit"}),
    ("limit=abc", {"limit"}),
    ("limit=-1", {"limit"}),
    ("limit=1.5", {"limit"}),
    ("limit=", {"limit"}),
    ("page=0", {"page"}),
    ("page=-3", {"page"}),
    ("page=abc", {"page"}),
    ("page=1000001", {"page"}),
    ("cursor=garbage", {"cursor"}),
    ("cursor=", {"cursor"}),
    ("cursor=" + "A" * 600, {"cursor"}),
    ("cursor=YTo2NWYwYzBmZmVlMDAwMDAwMDAwMGFiY2Q&page=2", None),  # base64url("a:<id>") + page
]


@pytest.mark.parametrize("query,fields", BAD_QUERIES, ids=[q[:40] for q, _ in BAD_QUERIES])
def test_list_bad_parameters_are_400(paged, query, fields):
    _, caller, _ = paged
    r = caller.get(f"/v1/users?{query}")
    found = validation_fields(r)
    if fields is not None:
        assert found == fields
    else:
        assert found & {"cursor", "page"}, found


def test_list_real_cursor_combined_with_page_is_400(paged):
    _, caller, _ = paged
    first = get_page(caller, "/v1/users?limit=5")
    cursor = parse_qs(urlsplit(first["_links"]["next"]["href"]).query)["cursor"][0]
    r = caller.get(f"/v1/users?limit=5&page=2&cursor={cursor}")
    assert validation_fields(r) & {"cursor", "page"}


def test_list_reflects_new_and_deleted_users(shared_server, admin):
    before = get_page(admin, "/v1/users?limit=1")["total"]
    extra = register(shared_server)
    assert get_page(admin, "/v1/users?limit=1")["total"] == before + 1
    assert extra.request("DELETE", user_path(extra.id)).status_code == 204
    assert get_page(admin, "/v1/users?limit=1")["total"] == before


def test_list_is_available_to_non_admins(shared_server, bob):
    body = get_page(bob, "/v1/users?limit=100")
    assert body["total"] >= 1


# --- GET /v1/users/me and /v1/users/{id} ------------------------------------------------------------

def test_me_returns_the_caller_with_etag(shared_server, alice):
    r = alice.get("/v1/users/me")
    assert r.status_code == 200, r.text
    body = assert_user(r.json())
    assert body["id"] == alice.id and body["email"] == alice.email and body["role"] == "user"
    assert (body["phone"], body["country"], body["state"]) == ("+1 555 0100", "Wonderland", "Looking Glass")
    assert r.headers.get("ETag")


def test_get_by_id_with_etag_and_conditional_get(shared_server, alice, bob):
    r = bob.get(user_path(alice.id))
    assert r.status_code == 200, r.text
    assert assert_user(r.json())["id"] == alice.id
    etag = r.headers["ETag"]
    assert re.match(r'^(W/)?"[^"]+"$', etag), etag
    assert alice.get("/v1/users/me").headers["ETag"] == etag

    not_modified = bob.get(user_path(alice.id), headers={"If-None-Match": etag})
    assert not_modified.status_code == 304, not_modified.text
    assert not_modified.content == b""
    assert not_modified.headers.get("ETag") == etag  # RFC 9110 15.4.5

    head = bob.request("HEAD", user_path(alice.id))
    assert head.status_code == 200 and head.content == b"" and head.headers.get("ETag") == etag

    listed = bob.get(user_path(alice.id), headers={"If-None-Match": f'"other", {etag}'})
    assert listed.status_code == 304
    weak = bob.get(user_path(alice.id), headers={"If-None-Match": "W/" + etag.removeprefix("W/")})
    assert weak.status_code == 304  # If-None-Match uses weak comparison (RFC 9110 13.1.2)
    star = bob.get(user_path(alice.id), headers={"If-None-Match": "*"})
    assert star.status_code == 304

    other = bob.get(user_path(alice.id), headers={"If-None-Match": '"not-the-etag"'})
    assert other.status_code == 200 and other.json()["id"] == alice.id


def test_conditional_get_after_change_returns_200(shared_server, alice):
    etag = alice.get(user_path(alice.id)).headers["ETag"]
    assert alice.request("PATCH", user_path(alice.id), {"firstName": "Changed"}).status_code == 200
    r = alice.get(user_path(alice.id), headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.json()["firstName"] == "Changed"
    assert r.headers["ETag"] != etag


@pytest.mark.parametrize("user_id", [UNKNOWN_ID, "000000000000000000000000", "not-an-id", "ZZZ"])
def test_get_unknown_id_is_404(shared_server, bob, user_id):
    body = assert_problem(bob.get(user_path(user_id)), 404)
    assert body["type"]


# --- POST /v1/users (admin) ---------------------------------------------------------------------------

def create_body(**overrides):
    body = {"email": unique_email("new"), "password": PASSWORD, "firstName": "New", "lastName": "Person"}
    body.update(overrides)
    return body


def test_admin_creates_user(shared_server, admin):
    body = create_body(phone="123", country="Norway", state="Oslo")
    r = admin.request("POST", "/v1/users", body)
    assert r.status_code == 201, r.text
    created = assert_user(r.json())
    assert created["role"] == "user"
    assert created["email"] == body["email"]
    assert (created["phone"], created["country"], created["state"]) == ("123", "Norway", "Oslo")
    assert r.headers["Location"] == user_path(created["id"]) == created["_links"]["self"]["href"]
    assert r.headers.get("ETag")
    assert PASSWORD not in r.text
    got = admin.get(r.headers["Location"])
    assert got.status_code == 200 and got.json() == created
    # The new account can log in with the password the admin chose.
    token = shared_server.login(body["email"])
    assert requests.get(shared_server.url("/v1/users/me"), headers=shared_server.auth(token),
                        timeout=10).json()["id"] == created["id"]


def test_admin_creates_admin(shared_server, admin):
    body = create_body(role="admin")
    r = admin.request("POST", "/v1/users", body)
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "admin"
    new_admin = Account(shared_server, r.json()["id"], body["email"], shared_server.login(body["email"]))
    # ...who can in turn create users.
    assert new_admin.request("POST", "/v1/users", create_body()).status_code == 201


def test_admin_creates_with_explicit_user_role(shared_server, admin):
    r = admin.request("POST", "/v1/users", create_body(role="user"))
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "user"


def test_non_admin_cannot_create_users(shared_server, bob):
    body = create_body()
    r = bob.request("POST", "/v1/users", body)
    assert_problem(r, 403)
    # Nothing was created: the email is still free.
    assert shared_server.register(body["email"]).status_code == 201


def test_admin_create_duplicate_email_is_409(shared_server, admin, bob):
    r = admin.request("POST", "/v1/users", create_body(email=bob.email.upper()))
    assert_problem(r, 409)


INVALID_CREATES = [
    ("missing password", {"password": None}, {"password"}),
    ("short password", {"password": "1234567"}, {"password"}),
    ("bad email", {"email": "nope"}, {"email"}),
    ("bad role", {"role": "superuser"}, {"role"}),
    ("role number", {"role": 1}, {"role"}),
    ("role null", {"role": None}, {"role"}),
    ("read-only id", {"id": UNKNOWN_ID}, {"id"}),
    ("read-only createdAt", {"createdAt": "2024-01-01T00:00:00Z"}, {"createdAt"}),
    ("read-only passwordHash", {"passwordHash": "x"}, {"passwordHash"}),
    ("unknown field", {"nickname": "x"}, {"nickname"}),
    ("dollar key", {"$where": "1"}, {"$where"}),
    ("blank lastName", {"lastName": "  "}, {"lastName"}),
    ("firstName number", {"firstName": 7}, {"firstName"}),
]


@pytest.mark.parametrize("overrides,fields", [(o, f) for _, o, f in INVALID_CREATES],
                         ids=[n for n, _, _ in INVALID_CREATES])
def test_admin_create_validation_is_400(shared_server, admin, overrides, fields):
    body = create_body(**overrides)
    if overrides.get("password", "") is None:
        del body["password"]
    r = admin.request("POST", "/v1/users", body)
    assert validation_fields(r) == fields


def test_admin_create_missing_everything_lists_all_required(shared_server, admin):
    r = admin.request("POST", "/v1/users", {})
    assert validation_fields(r) == {"email", "password", "firstName", "lastName"}


# --- PUT /v1/users/{id} -------------------------------------------------------------------------------

def replace_body(account, **overrides):
    body = {"email": account.email, "firstName": "Replaced", "lastName": "Name"}
    body.update(overrides)
    return body


def test_put_with_if_match_replaces_and_clears_absent_optional_fields(shared_server, alice):
    before = alice.get(user_path(alice.id))
    old = before.json()
    assert "phone" in old and "country" in old and "state" in old
    r = alice.request("PUT", user_path(alice.id), replace_body(alice), headers={"If-Match": before.headers["ETag"]})
    assert r.status_code == 200, r.text
    body = assert_user(r.json())
    assert body["firstName"] == "Replaced" and body["lastName"] == "Name"
    for optional in ("phone", "country", "state"):
        assert optional not in body, body
    assert body["id"] == old["id"] and body["createdAt"] == old["createdAt"] and body["role"] == "user"
    assert body["updatedAt"] >= old["updatedAt"]
    assert r.headers["ETag"] and r.headers["ETag"] != before.headers["ETag"]
    again = alice.get(user_path(alice.id))
    assert again.json() == body and again.headers["ETag"] == r.headers["ETag"]


def test_put_without_if_match_merges_like_the_node_service(shared_server, alice):
    """The Node.js service's clients send partial bodies and no If-Match: absent fields are kept."""
    r = alice.request("PATCH", user_path(alice.id), {"phone": "+1 555 0100", "country": "Kept", "state": "Kept"},
                      content_type="application/merge-patch+json")
    assert r.status_code == 200, r.text
    r = alice.request("PUT", user_path(alice.id), {"firstName": "OnlyFirst"})
    assert r.status_code == 200, r.text
    body = assert_user(r.json())
    assert body["firstName"] == "OnlyFirst" and body["email"] == alice.email
    assert body["phone"] == "+1 555 0100" and body["country"] == "Kept" and body["state"] == "Kept"
    r = alice.request("PUT", user_path(alice.id), {"state": None})  # null still removes an optional field
    assert r.status_code == 200 and "state" not in r.json(), r.text
    # With If-Match the body must be complete.
    etag = alice.get(user_path(alice.id)).headers["ETag"]
    r = alice.request("PUT", user_path(alice.id), {"firstName": "Partial"}, headers={"If-Match": etag})
    assert validation_fields(r) == {"email", "lastName"}


def test_put_with_null_optional_fields_clears_them(shared_server, alice):
    r = alice.request("PUT", user_path(alice.id), replace_body(alice, phone=None, country="Elsewhere", state=None))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "phone" not in body and "state" not in body and body["country"] == "Elsewhere"


def test_put_changes_email_and_login_follows(shared_server, bob):
    new_email = unique_email("moved")
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, email=new_email))
    assert r.status_code == 200, r.text
    assert r.json()["email"] == new_email
    shared_server.login(new_email)
    old = requests.post(shared_server.url("/v1/auth/login"), json={"email": bob.email, "password": PASSWORD},
                        timeout=10)
    assert_problem(old, 401)


def test_put_cannot_change_password(shared_server, bob):
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, password="a brand new password"))
    assert validation_fields(r) == {"password"}


@pytest.mark.parametrize("role", ["user", "admin"])
def test_put_role_by_non_admin_is_400(shared_server, bob, role):
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, role=role))
    assert validation_fields(r) == {"role"}
    assert bob.get("/v1/users/me").json()["role"] == "user"


def test_put_role_by_admin_promotes_immediately(shared_server, admin, bob):
    r = admin.request("PUT", user_path(bob.id), replace_body(bob, role="admin"))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
    # Roles are read per request: bob's existing token now carries admin rights.
    assert bob.get("/v1/users/me").json()["role"] == "admin"
    assert bob.request("POST", "/v1/users", create_body()).status_code == 201
    # And back.
    r = admin.request("PUT", user_path(bob.id), replace_body(bob, role="user"))
    assert r.status_code == 200 and r.json()["role"] == "user"
    assert_problem(bob.request("POST", "/v1/users", create_body()), 403)


def test_put_role_by_admin_invalid_value_is_400(shared_server, admin, bob):
    r = admin.request("PUT", user_path(bob.id), replace_body(bob, role="root"))
    assert validation_fields(r) == {"role"}


def test_put_admin_replaces_another_user(shared_server, admin, alice):
    r = admin.request("PUT", user_path(alice.id), replace_body(alice, firstName="ByAdmin"))
    assert r.status_code == 200, r.text
    assert r.json()["firstName"] == "ByAdmin" and r.json()["id"] == alice.id


def test_put_other_user_by_non_admin_is_403(shared_server, alice, bob):
    r = bob.request("PUT", user_path(alice.id), replace_body(alice, firstName="Hacked"))
    assert_problem(r, 403)
    assert alice.get("/v1/users/me").json()["firstName"] != "Hacked"


def test_put_unknown_id_by_admin_is_404(shared_server, admin):
    r = admin.request("PUT", user_path(UNKNOWN_ID), {"email": unique_email(), "firstName": "A", "lastName": "B"})
    assert_problem(r, 404)


def test_put_if_match_current_then_stale(shared_server, alice):
    etag = alice.get(user_path(alice.id)).headers["ETag"]
    r = alice.request("PUT", user_path(alice.id), replace_body(alice, firstName="First"), headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    new_etag = r.headers["ETag"]
    assert new_etag and new_etag != etag
    stale = alice.request("PUT", user_path(alice.id), replace_body(alice, firstName="Second"),
                          headers={"If-Match": etag})
    assert_problem(stale, 412)
    current = alice.get(user_path(alice.id))
    assert current.json()["firstName"] == "First" and current.headers["ETag"] == new_etag
    star = alice.request("PUT", user_path(alice.id), replace_body(alice, firstName="Star"), headers={"If-Match": "*"})
    assert star.status_code == 200


def test_put_email_taken_is_409(shared_server, alice, bob):
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, email=alice.email.upper()))
    assert_problem(r, 409)
    assert bob.get("/v1/users/me").json()["email"] == bob.email


def test_put_own_email_in_other_case_is_allowed(shared_server):
    u = uuid.uuid4().hex[:10]
    carol = register(shared_server, email=f"carol.{u}@example.com")
    r = carol.request("PUT", user_path(carol.id), replace_body(carol, email=f"Carol.{u}@Example.com"))
    assert r.status_code == 200, r.text
    assert r.json()["email"] == f"Carol.{u}@Example.com"


@pytest.mark.parametrize("missing", ["email", "firstName", "lastName"])
def test_put_with_if_match_missing_required_field_is_400(shared_server, bob, missing):
    body = replace_body(bob)
    del body[missing]
    etag = bob.get(user_path(bob.id)).headers["ETag"]
    assert validation_fields(bob.request("PUT", user_path(bob.id), body, headers={"If-Match": etag})) == {missing}


@pytest.mark.parametrize("extra", [
    {"id": UNKNOWN_ID}, {"createdAt": "2020-01-01T00:00:00Z"}, {"updatedAt": "2020-01-01T00:00:00Z"},
    {"passwordHash": "x"}, {"_links": {}}, {"nickname": "x"},
], ids=lambda d: next(iter(d)))
def test_put_read_only_or_unknown_field_is_400(shared_server, bob, extra):
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, **extra))
    assert validation_fields(r) == set(extra)
    assert bob.get("/v1/users/me").json()["firstName"] != "Replaced"  # nothing applied


def test_put_invalid_values_are_400(shared_server, bob):
    r = bob.request("PUT", user_path(bob.id), replace_body(bob, email="nope", firstName="", phone="abc"))
    assert validation_fields(r) == {"email", "firstName", "phone"}


# --- PATCH /v1/users/{id} -----------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [MERGE_PATCH, "application/json", "application/merge-patch+json; charset=utf-8"])
def test_patch_changes_only_given_fields(shared_server, alice, content_type):
    before = alice.get(user_path(alice.id))
    old = before.json()
    r = alice.request("PATCH", user_path(alice.id), {"firstName": "Patched"}, content_type=content_type)
    assert r.status_code == 200, r.text
    body = assert_user(r.json())
    assert body["firstName"] == "Patched"
    for key in ("email", "lastName", "phone", "country", "state", "role", "createdAt", "id"):
        assert body[key] == old[key], key
    assert r.headers["ETag"] != before.headers["ETag"]
    assert alice.get(user_path(alice.id)).json() == body


def test_patch_null_removes_phone_only(shared_server, alice):
    r = alice.request("PATCH", user_path(alice.id), {"phone": None}, content_type=MERGE_PATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "phone" not in body
    assert body["country"] == "Wonderland" and body["state"] == "Looking Glass"


def test_patch_sets_optional_fields(shared_server, bob):
    r = bob.request("PATCH", user_path(bob.id), {"phone": "(0) 12-34", "state": "Bavaria"}, content_type=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "(0) 12-34" and r.json()["state"] == "Bavaria" and "country" not in r.json()


def test_patch_empty_object_changes_nothing(shared_server, alice):
    old = alice.get(user_path(alice.id)).json()
    r = alice.request("PATCH", user_path(alice.id), {}, content_type=MERGE_PATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    for key in ("email", "firstName", "lastName", "phone", "country", "state", "role"):
        assert body.get(key) == old.get(key)


@pytest.mark.parametrize("field", ["firstName", "lastName", "email"])
def test_patch_null_required_field_is_400(shared_server, alice, field):
    r = alice.request("PATCH", user_path(alice.id), {field: None}, content_type=MERGE_PATCH)
    assert validation_fields(r) == {field}
    assert alice.get("/v1/users/me").json().get(field)


@pytest.mark.parametrize("patch,fields", [
    ({"email": "nope"}, {"email"}),
    ({"firstName": "   "}, {"firstName"}),
    ({"lastName": 5}, {"lastName"}),
    ({"phone": "phone"}, {"phone"}),
    ({"password": "a new password!"}, {"password"}),
    ({"id": UNKNOWN_ID}, {"id"}),
    ({"createdAt": "2020-01-01T00:00:00Z"}, {"createdAt"}),
    ({"$set": {"role": "admin"}}, {"$set"}),
], ids=lambda v: json.dumps(v)[:30] if isinstance(v, dict) else None)
def test_patch_invalid_is_400(shared_server, bob, patch, fields):
    r = bob.request("PATCH", user_path(bob.id), patch, content_type=MERGE_PATCH)
    assert validation_fields(r) == fields


def test_patch_role_by_non_admin_is_400(shared_server, bob):
    r = bob.request("PATCH", user_path(bob.id), {"role": "admin"}, content_type=MERGE_PATCH)
    assert validation_fields(r) == {"role"}
    assert bob.get("/v1/users/me").json()["role"] == "user"


def test_patch_role_by_admin(shared_server, admin, bob):
    r = admin.request("PATCH", user_path(bob.id), {"role": "admin"}, content_type=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
    assert bob.get("/v1/users/me").json()["role"] == "admin"


def test_patch_other_user_by_non_admin_is_403(shared_server, alice, bob):
    r = bob.request("PATCH", user_path(alice.id), {"firstName": "Hacked"}, content_type=MERGE_PATCH)
    assert_problem(r, 403)
    assert alice.get("/v1/users/me").json()["firstName"] != "Hacked"


def test_patch_other_user_by_admin(shared_server, admin, alice):
    r = admin.request("PATCH", user_path(alice.id), {"lastName": "ByAdmin"}, content_type=MERGE_PATCH)
    assert r.status_code == 200 and r.json()["lastName"] == "ByAdmin"


def test_patch_unknown_id_by_admin_is_404(shared_server, admin):
    assert_problem(admin.request("PATCH", user_path(UNKNOWN_ID), {"firstName": "X"}, content_type=MERGE_PATCH), 404)


def test_patch_email_taken_is_409(shared_server, alice, bob):
    r = bob.request("PATCH", user_path(bob.id), {"email": alice.email}, content_type=MERGE_PATCH)
    assert_problem(r, 409)


def test_patch_if_match(shared_server, alice):
    etag = alice.get(user_path(alice.id)).headers["ETag"]
    ok = alice.request("PATCH", user_path(alice.id), {"state": "One"}, content_type=MERGE_PATCH,
                       headers={"If-Match": etag})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] != etag
    stale = alice.request("PATCH", user_path(alice.id), {"state": "Two"}, content_type=MERGE_PATCH,
                          headers={"If-Match": etag})
    assert_problem(stale, 412)
    assert alice.get("/v1/users/me").json()["state"] == "One"
    fresh = alice.request("PATCH", user_path(alice.id), {"state": "Three"}, content_type=MERGE_PATCH,
                          headers={"If-Match": ok.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.json()["state"] == "Three"


def test_patch_unsupported_content_type_is_415(shared_server, alice):
    r = alice.request("PATCH", user_path(alice.id), {"firstName": "X"}, content_type="application/json-patch+json")
    assert_problem(r, 415)


# --- DELETE /v1/users/{id} ----------------------------------------------------------------------------

def test_delete_self(shared_server, admin):
    carol = register(shared_server)
    r = carol.request("DELETE", user_path(carol.id))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(admin.get(user_path(carol.id)), 404)
    # The email is free again.
    assert shared_server.register(carol.email).status_code == 201


def test_admin_deletes_other_user(shared_server, admin):
    carol = register(shared_server)
    r = admin.request("DELETE", user_path(carol.id))
    assert r.status_code == 204, r.text
    assert_problem(admin.get(user_path(carol.id)), 404)
    assert_problem(admin.request("DELETE", user_path(carol.id)), 404)


def test_non_admin_cannot_delete_other_user(shared_server, alice, bob):
    assert_problem(bob.request("DELETE", user_path(alice.id)), 403)
    assert alice.get(user_path(alice.id)).status_code == 200


def test_delete_with_stale_if_match_is_412_then_current_succeeds(shared_server, admin):
    carol = register(shared_server)
    etag = carol.get(user_path(carol.id)).headers["ETag"]
    patched = carol.request("PATCH", user_path(carol.id), {"firstName": "Newer"}, content_type=MERGE_PATCH)
    assert patched.status_code == 200
    assert_problem(carol.request("DELETE", user_path(carol.id), headers={"If-Match": etag}), 412)
    assert admin.get(user_path(carol.id)).status_code == 200
    r = carol.request("DELETE", user_path(carol.id), headers={"If-Match": patched.headers["ETag"]})
    assert r.status_code == 204, r.text
    assert_problem(admin.get(user_path(carol.id)), 404)


def test_delete_with_if_match_star(shared_server):
    carol = register(shared_server)
    assert carol.request("DELETE", user_path(carol.id), headers={"If-Match": "*"}).status_code == 204


@pytest.mark.atomic_conditional_update
def test_concurrent_conditional_updates_let_exactly_one_win(shared_server, alice):
    import threading  # noqa: PLC0415

    etag = alice.get(user_path(alice.id)).headers["ETag"]
    results = {}

    def attempt(i):
        r = alice.request("PATCH", user_path(alice.id), {"firstName": f"Writer{i}"}, content_type=MERGE_PATCH,
                          headers={"If-Match": etag})
        results[i] = r.status_code

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, status in results.items() if status == 200]
    assert len(winners) == 1, results
    assert all(status == 412 for i, status in results.items() if i not in winners), results
    assert alice.get(user_path(alice.id)).json()["firstName"] == f"Writer{winners[0]}"


def test_concurrent_unconditional_updates_all_apply_without_errors(shared_server, alice):
    import threading  # noqa: PLC0415

    statuses = []

    def attempt(i):
        statuses.append(alice.request("PATCH", user_path(alice.id), {"state": f"S{i}"},
                                      content_type=MERGE_PATCH).status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8, statuses


def test_delete_unknown_id_by_admin_is_404(shared_server, admin):
    assert_problem(admin.request("DELETE", user_path(UNKNOWN_ID)), 404)
