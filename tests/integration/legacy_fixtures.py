"""The Node.js users service's data, written the way Mongoose wrote it, for the import-legacy tests.

Collections `authusers` ({userName, email, hashPassword, create_at, __v}) and `users` ({firstName, lastName,
email, phone, country, state, create_at, __v}), ObjectId _ids, create_at as BSON Dates, nothing unique.
bcrypt hashes are made by the system's libcrypt (libxcrypt) through ctypes, as the service's bcrypt made
them ("$2b$10$..."): no Python bcrypt library, so the test does not share an implementation with usersd.

Run as a script to fill a database with N synthetic legacy users (for measuring the import rate):
    python legacy_fixtures.py mongodb://127.0.0.1:27017/legacy 10000
"""
import ctypes
import ctypes.util
import datetime
import sys
from dataclasses import dataclass, field

from bson import ObjectId
from pymongo import MongoClient

_libcrypt = None


def _crypt():
    global _libcrypt
    if _libcrypt is None:
        name = ctypes.util.find_library("crypt")
        if name is None:
            raise RuntimeError("libcrypt (libxcrypt) not found: install libcrypt1 / libcrypt-dev")
        lib = ctypes.CDLL(name)
        lib.crypt_gensalt_rn.restype = ctypes.c_char_p
        lib.crypt_gensalt_rn.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
                                         ctypes.c_char_p, ctypes.c_int]
        lib.crypt_rn.restype = ctypes.c_char_p
        lib.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        _libcrypt = lib
    return _libcrypt


def bcrypt_hash(password: str, cost: int = 10, prefix: str = "$2b$") -> str:
    """A bcrypt hash of `password` made by libcrypt: crypt_gensalt_rn (salt from the OS) then crypt_rn."""
    lib = _crypt()
    setting = ctypes.create_string_buffer(192)  # CRYPT_GENSALT_OUTPUT_SIZE
    if lib.crypt_gensalt_rn(prefix.encode(), cost, None, 0, setting, len(setting)) is None:
        raise RuntimeError("crypt_gensalt_rn failed")
    data = ctypes.create_string_buffer(65536)  # >= sizeof(struct crypt_data)
    out = lib.crypt_rn(password.encode(), setting.value, data, len(data))
    if out is None or out.startswith(b"*"):
        raise RuntimeError("crypt_rn failed")
    return out.decode()


def at(day: int, second: int = 0) -> datetime.datetime:
    """A create_at Date (BSON keeps milliseconds, UTC)."""
    return datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(days=day, seconds=second)


def ms(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass
class Expected:
    """What the import must make of the fixture."""
    logins: dict = field(default_factory=dict)        # email -> (password, expected user id)
    rejected_logins: dict = field(default_factory=dict)  # email -> password that must not work
    users: dict = field(default_factory=dict)         # id -> dict of fields the exported line must have
    no_password: list = field(default_factory=list)   # ids of users that cannot log in
    skipped_ids: dict = field(default_factory=dict)   # raw legacy id -> note kind (duplicate / invalid)
    accounts: int = 0
    directory: int = 0


def write_scenario(db) -> Expected:
    """A small legacy data set with every case the import must handle; returns what must come out."""
    exp = Expected()
    accounts, directory = [], []

    def account(user_name, email, password, when, **extra):
        doc = {"_id": ObjectId(), "userName": user_name, "email": email, "create_at": when, "__v": 0}
        if password is not None:
            doc["hashPassword"] = bcrypt_hash(password)
        doc.update(extra)
        accounts.append(doc)
        return doc

    def record(first, last, email, when, **extra):
        doc = {"_id": ObjectId(), "lastName": last, "email": email, "create_at": when, "__v": 0}
        if first is not None:
            doc["firstName"] = first
        doc.update(extra)
        directory.append(doc)
        return doc

    # An account and a directory record for one person (emails differ in case): one user, the record's id.
    ada_acc = account("ada.lovelace", "Ada@Example.com", "ada's old password", at(1))
    ada_rec = record("Ada", "Lovelace", "ada@example.COM", at(2), phone="+44 20 7946 0000", country="UK", state="London")
    exp.logins["ada@example.com"] = ("ada's old password", str(ada_rec["_id"]))
    exp.users[str(ada_rec["_id"])] = {"email": "ada@example.COM", "firstName": "Ada", "lastName": "Lovelace",
                                      "userName": "ada.lovelace", "phone": "+44 20 7946 0000", "country": "UK",
                                      "state": "London", "createdAt": ms(at(2))}

    # An account alone: names from the userName.
    grace = account("grace_hopper", "grace@example.com", "cobol-1959", at(3))
    exp.logins["grace@example.com"] = ("cobol-1959", str(grace["_id"]))
    exp.users[str(grace["_id"])] = {"firstName": "grace", "lastName": "hopper", "userName": "grace_hopper",
                                    "createdAt": ms(at(3))}

    # A userName outside usersd's charset: left out, names still derived from it.
    linus = account("Linus Torvalds", "linus@example.com", "penguin power", at(4))
    exp.logins["linus@example.com"] = ("penguin power", str(linus["_id"]))
    exp.users[str(linus["_id"])] = {"firstName": "Linus", "lastName": "Torvalds", "userName": None}

    # Duplicate accounts by email in mixed case: the older wins; the newer's password does not log in.
    dup_old = account("dup.one", "dup@example.com", "first password", at(5))
    dup_new = account("dup.two", "DUP@Example.COM", "second password", at(6))
    exp.logins["dup@example.com"] = ("first password", str(dup_old["_id"]))
    exp.rejected_logins["dup@example.com"] = "second password"
    exp.skipped_ids[str(dup_new["_id"])] = "duplicate"

    # No create_at (an old document): createdAt from the ObjectId.
    old = account("old.timer", "old@example.com", "from before dates", None)
    del old["create_at"]
    exp.logins["old@example.com"] = ("from before dates", str(old["_id"]))
    exp.users[str(old["_id"])] = {"createdAt": int(old["_id"].generation_time.timestamp()) * 1000}

    # No hashPassword: imported, cannot log in.
    nohash = account("no.hash", "nohash@example.com", None, at(7))
    exp.no_password.append(str(nohash["_id"]))

    # An account without an email: invalid, reported.
    bad_acc = account("no.email", "", "whatever pass", at(8))
    del bad_acc["email"]
    exp.skipped_ids[str(bad_acc["_id"])] = "invalid"

    # Directory records alone: users that cannot log in until an admin sets a password.
    dir_only = record(None, "Only", "dir.only@example.com", at(9), phone="n/a", country="NZ")
    exp.users[str(dir_only["_id"])] = {"firstName": "dir.only", "lastName": "Only", "country": "NZ", "phone": None,
                                       "createdAt": ms(at(9))}
    exp.no_password.append(str(dir_only["_id"]))

    # Duplicate directory records: same create_at, so the smaller _id wins.
    twin_a = record("Twin", "A", "Twin@example.com", at(10))
    twin_b = record("Twin", "B", "twin@EXAMPLE.com", at(10))
    winner, loser = sorted([twin_a, twin_b], key=lambda d: str(d["_id"]))
    exp.users[str(winner["_id"])] = {"lastName": winner["lastName"]}
    exp.no_password.append(str(winner["_id"]))
    exp.skipped_ids[str(loser["_id"])] = "duplicate"

    # A directory record with an invalid email: invalid, reported.
    bad_rec = record("Bad", "Email", "not-an-email", at(11))
    exp.skipped_ids[str(bad_rec["_id"])] = "invalid"

    db.authusers.insert_many(accounts)
    db.users.insert_many(directory)
    exp.accounts, exp.directory = len(accounts), len(directory)
    return exp


def write_synthetic(db, count: int, batch: int = 1000):
    """`count` accounts, each with a directory record for the same email (one hash reused: only the import is
    measured), plus every tenth email duplicated in upper case."""
    shared_hash = bcrypt_hash("synthetic password")
    accounts, directory = [], []
    for i in range(count):
        email = f"user{i}@example.com"
        accounts.append({"_id": ObjectId(), "userName": f"user.{i}", "email": email, "hashPassword": shared_hash,
                         "create_at": at(i % 1000, i), "__v": 0})
        directory.append({"_id": ObjectId(), "firstName": f"First{i}", "lastName": f"Last{i}", "email": email,
                          "phone": "+1 555 0100", "country": "US", "state": "CA", "create_at": at(i % 1000, i),
                          "__v": 0})
        if i % 10 == 0:
            directory.append({"_id": ObjectId(), "firstName": "Dup", "lastName": "Dup", "email": email.upper(),
                              "create_at": at(2000), "__v": 0})
    for start in range(0, len(accounts), batch):
        db.authusers.insert_many(accounts[start:start + batch])
    for start in range(0, len(directory), batch):
        db.users.insert_many(directory[start:start + batch])


def database(url: str):
    """The database a mongodb:// URL names, with a client that fails fast."""
    client = MongoClient(url, serverSelectionTimeoutMS=5000)
    return client, client.get_default_database()


if __name__ == "__main__":
    url, count = sys.argv[1], int(sys.argv[2])
    client, db = database(url)
    write_synthetic(db, count)
    print(f"wrote {count} accounts and {count + (count + 9) // 10} directory records to {db.name}")
    client.close()
