"""Bench data: an admin, N ordinary users (all with one known password) and their tokens.

Registering 1 000 users over HTTP would cost 1 000 Argon2id hashes; instead the admin is created with
`usersd user add` and the others are `usersd import`ed with a copy of its password hash (the lossless
export format), which takes a second."""
import json
import secrets
import urllib.request

PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "admin@bench.test"


def http_json(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def login(base, email):
    return http_json("POST", base + "/v1/auth/login", {"email": email, "password": PASSWORD})["token"]


def seed(usersd, count):
    """Creates the admin and `count` users; returns {'admin_token', 'user_token', 'user_id', 'user_email', 'ids'}."""
    usersd.cli("user", "add", "--admin", "--email", ADMIN_EMAIL, "--first-name", "Bench", "--last-name", "Admin",
               stdin=PASSWORD + "\n")
    admin = next(json.loads(l) for l in usersd.cli("export").splitlines() if ADMIN_EMAIL in l)
    lines, ids = [], []
    for i in range(count):
        user_id = secrets.token_hex(12)
        ids.append(user_id)
        lines.append(json.dumps({
            "id": user_id, "email": f"user{i}@bench.test", "firstName": "Bench", "lastName": f"User{i}",
            "role": "user", "passwordHash": admin["passwordHash"], "createdAt": admin["createdAt"],
            "updatedAt": admin["updatedAt"], "version": 1}))
    usersd.cli("import", stdin="\n".join(lines) + "\n")
    return {
        "admin_token": login(usersd.base, ADMIN_EMAIL),
        "user_token": login(usersd.base, "user0@bench.test"),
        "user_id": ids[0],
        "user_email": "user0@bench.test",
        "ids": ids,
    }
