"""The Node.js service's clients, unchanged, against usersd: register with {userName, email, password},
login, `Authorization: JWT <token>`, and PUT with a partial body and no If-Match (a merge, as before).

Runs in both passes (SQLite and MongoDB), like the other API suites.
"""
import uuid

import requests


def _name():
    return "old." + uuid.uuid4().hex[:10]


def test_old_client_flow_register_login_jwt_partial_put(server):
    user_name = _name()
    email = f"{user_name}@Example.com"
    r = requests.post(server.url("/v1/auth/register"),
                      json={"userName": user_name, "email": email, "password": "old client password"}, timeout=10)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["userName"] == user_name
    assert created["firstName"] == "old" and created["lastName"] == user_name.split(".", 1)[1]  # derived, documented
    assert r.headers["Location"] == f"/v1/users/{created['id']}"

    r = requests.post(server.url("/v1/auth/login"), json={"email": email.lower(), "password": "old client password"},
                      timeout=10)
    assert r.status_code == 200, r.text
    jwt = {"Authorization": "JWT " + r.json()["token"]}
    me = requests.get(server.url("/v1/users/me"), headers=jwt, timeout=10)
    assert me.status_code == 200 and me.json()["id"] == created["id"]

    # The old PUT: a partial body, no If-Match; what is not sent stays.
    path = server.url(f"/v1/users/{created['id']}")
    r = requests.put(path, json={"firstName": "Olde", "phone": "+1 555 0199"}, headers=jwt, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["firstName"] == "Olde" and body["phone"] == "+1 555 0199"
    assert body["lastName"] == created["lastName"] and body["email"] == email and body["userName"] == user_name
    r = requests.put(path, json={"country": "NZ"}, headers=jwt, timeout=10)
    assert r.status_code == 200 and r.json()["phone"] == "+1 555 0199" and r.json()["country"] == "NZ", r.text

    # userName is unique ignoring case, in registration and in updates.
    r = requests.post(server.url("/v1/auth/register"),
                      json={"userName": user_name.upper(), "email": f"other.{user_name}@example.com",
                            "password": "another password"}, timeout=10)
    assert r.status_code == 409 and "userName" in r.json()["detail"], r.text
    other = requests.post(server.url("/v1/auth/register"),
                          json={"userName": _name(), "email": f"x.{user_name}@example.com", "password": "pw pw pw pw"},
                          timeout=10)
    assert other.status_code == 201, other.text
    token = requests.post(server.url("/v1/auth/login"),
                          json={"email": f"x.{user_name}@example.com", "password": "pw pw pw pw"}, timeout=10).json()["token"]
    r = requests.put(server.url(f"/v1/users/{other.json()['id']}"), json={"userName": user_name.title()},
                     headers={"Authorization": f"JWT {token}"}, timeout=10)
    assert r.status_code == 409 and "userName" in r.json()["detail"], r.text


def test_register_without_user_name_still_needs_names_and_bad_user_names_are_400(server):
    r = requests.post(server.url("/v1/auth/register"),
                      json={"email": "nameless@example.com", "password": "old client password"}, timeout=10)
    assert r.status_code == 400
    assert {e["field"] for e in r.json()["errors"]} == {"firstName", "lastName"}
    r = requests.post(server.url("/v1/auth/register"),
                      json={"userName": "has space", "email": "spaced@example.com", "password": "old client password"},
                      timeout=10)
    assert r.status_code == 400
    assert "userName" in {e["field"] for e in r.json()["errors"]}
