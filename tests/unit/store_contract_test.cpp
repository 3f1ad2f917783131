// The UserStore contract, written once and run against both implementations: every
// STORE_CONTRACT_CASE registers one test case on SQLite (a temp file) and one on MongoDB.
//
// The MongoDB cases are in doctest test suite "mongo" and need a server: set
// USERSD_TEST_MONGODB_URL (e.g. mongodb://127.0.0.1:27017/); each case run gets a fresh database,
// dropped afterwards. Without the variable they fail, never skip: select them with -ts=mongo where a
// server exists, exclude them with -tse=mongo elsewhere.
#include <bson/bson.h>
#include <doctest/doctest.h>
#include <mongoc/mongoc.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/mongo_store.hpp"
#include "common/sqlite_store.hpp"
#include "tests/unit/store_test_support.hpp"

namespace {

using namespace usersd;
using namespace usersd::testing;

constexpr const char* kMongoUrlVariable = "USERSD_TEST_MONGODB_URL";

// ---------------------------------------------------------------------------------------------
// Users

std::vector<std::string> ids_of(const UserPage& page) {
  std::vector<std::string> ids;
  for (const auto& u : page.users) ids.push_back(u.id);
  return ids;
}

std::vector<std::string> id_range(unsigned first, unsigned last) {
  std::vector<std::string> ids;
  for (unsigned n = first; n <= last; ++n) ids.push_back(make_id(n));
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Fixtures: each opens a store on fresh, empty storage and removes the storage afterwards.

class StoreFixture {
 public:
  virtual ~StoreFixture() = default;
  UserStore& store() { return *store_; }

 protected:
  std::unique_ptr<UserStore> store_;
};

class SqliteFixture final : public StoreFixture {
 public:
  SqliteFixture() {
    std::string pattern = "/tmp/usersd-contract-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
    auto opened = open_sqlite_store({dir_ + "/users.db", 5000, /*pool_size=*/4});
    REQUIRE_MESSAGE(opened.ok(), message_of(opened));
    store_ = std::move(opened).value();
  }
  ~SqliteFixture() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  std::string dir_;
};

// base "mongodb://h:p/" or "mongodb://h:p/olddb?x=y" -> the same URL naming `database`.
std::string with_database(const std::string& base, const std::string& database) {
  const auto scheme_end = base.find("://");
  if (scheme_end == std::string::npos) return base;
  const auto authority_end = base.find_first_of("/?", scheme_end + 3);
  if (authority_end == std::string::npos) return base + "/" + database;
  if (base[authority_end] == '?') return base.substr(0, authority_end) + "/" + database + base.substr(authority_end);
  const auto query = base.find('?', authority_end);
  return base.substr(0, authority_end + 1) + database + (query == std::string::npos ? "" : base.substr(query));
}

// A database name unique to this process and fixture instance (every doctest subcase run gets one).
std::string fresh_database_name() {
  static std::atomic<unsigned> counter{0};
  return "usersd_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

std::string mongo_base_url() {
  const char* url = std::getenv(kMongoUrlVariable);
  if (url == nullptr || *url == '\0') {
    const std::string name = kMongoUrlVariable;  // a std::string: doctest prints a const char* as a pointer
    FAIL(name << " is not set: the MongoDB store tests (test suite \"mongo\") need a MongoDB-compatible "
                 "server, e.g. "
              << name << "=mongodb://127.0.0.1:27017/ ; run the other tests with -tse=mongo");
  }
  return url;
}

struct MongoClientDeleter {
  void operator()(mongoc_client_t* client) const noexcept { mongoc_client_destroy(client); }
};
struct MongoDatabaseDeleter {
  void operator()(mongoc_database_t* database) const noexcept { mongoc_database_destroy(database); }
};
struct MongoCollectionDeleter {
  void operator()(mongoc_collection_t* collection) const noexcept { mongoc_collection_destroy(collection); }
};
struct MongoCursorDeleter {
  void operator()(mongoc_cursor_t* cursor) const noexcept { mongoc_cursor_destroy(cursor); }
};
// Owns a heap bson_t (bson_new/BCON_NEW/bson_copy). Not a unique_ptr<bson_t>: bson_t's alignment
// attribute is dropped on template arguments, which GCC warns about.
class OwnedBson {
 public:
  explicit OwnedBson(bson_t* doc = nullptr) : doc_(doc) {}
  OwnedBson(OwnedBson&& other) noexcept : doc_(std::exchange(other.doc_, nullptr)) {}
  OwnedBson& operator=(OwnedBson&& other) noexcept {
    std::swap(doc_, other.doc_);
    return *this;
  }
  ~OwnedBson() {
    if (doc_ != nullptr) bson_destroy(doc_);
  }
  const bson_t* get() const { return doc_; }
  explicit operator bool() const { return doc_ != nullptr; }

 private:
  bson_t* doc_;
};

class MongoFixture final : public StoreFixture {
 public:
  MongoFixture() : database_(fresh_database_name()), url_(with_database(mongo_base_url(), database_)) {
    auto opened = open_mongo_store({url_, /*pool_size=*/4});
    REQUIRE_MESSAGE(opened.ok(), "cannot open " << redact_url(url_) << ": " << message_of(opened));
    store_ = std::move(opened).value();
  }
  ~MongoFixture() override {
    store_.reset();
    // The driver is initialized: the store was opened (or at least attempted) above.
    std::unique_ptr<mongoc_client_t, MongoClientDeleter> client(mongoc_client_new(url_.c_str()));
    if (!client) return;
    std::unique_ptr<mongoc_database_t, MongoDatabaseDeleter> database(
        mongoc_client_get_database(client.get(), database_.c_str()));
    bson_error_t error;
    mongoc_database_drop(database.get(), &error);  // best effort: a leftover database only costs disk
  }

  const std::string& url() const { return url_; }
  const std::string& database() const { return database_; }

 private:
  std::string database_;
  std::string url_;
};

// ---------------------------------------------------------------------------------------------
// One body, two registered test cases.

#define STORE_CONTRACT_CASE(title) STORE_CONTRACT_CASE_IMPL(title, DOCTEST_ANONYMOUS(store_contract_body_))
#define STORE_CONTRACT_CASE_IMPL(title, body)                                          \
  void body(UserStore& store);                                                         \
  TEST_CASE("store contract [sqlite]: " title) {                                       \
    SqliteFixture fixture;                                                             \
    body(fixture.store());                                                             \
  }                                                                                    \
  TEST_CASE("store contract [mongo]: " title * doctest::test_suite("mongo")) {         \
    MongoFixture fixture;                                                              \
    body(fixture.store());                                                             \
  }                                                                                    \
  void body(UserStore& store)

// create + find_by_id + find_by_email for users [first, first + count).
void create_and_read(UserStore& store, unsigned first, unsigned count, ThreadErrors& errors) {
  for (unsigned n = first; n < first + count; ++n) {
    const User u = make_user(n);
    if (auto r = store.create(u); !r) errors.add("create " + u.id + ": " + r.error().message);
    if (auto r = store.find_by_id(u.id); !r || r.value().email != u.email) {
      errors.add("find_by_id " + u.id + ": " + message_of(r));
    }
    if (auto r = store.find_by_email(u.email_normalized); !r || r.value().id != u.id) {
      errors.add("find_by_email " + u.email_normalized + ": " + message_of(r));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The contract

STORE_CONTRACT_CASE("create and find round trip every field") {
  User full = make_user(1);
  full.phone = "+1 555 0100";
  full.country = "US";
  full.state = "CA";
  full.role = Role::admin;
  full.first_name = "Zoë";  // non-ASCII survives
  User bare = make_user(2);  // every optional is nullopt
  User empty_optionals = make_user(3);
  empty_optionals.phone = "";  // an empty string is not the same as absent
  empty_optionals.country = "";
  empty_optionals.state = "";
  User only_country = make_user(4);
  only_country.country = "NZ";
  only_country.version = 7;  // a caller-chosen version is stored as given
  User large_times = make_user(5);
  large_times.created_at_ms = 4'102'444'800'123;  // 2100-01-01, millisecond precision kept
  large_times.updated_at_ms = large_times.created_at_ms + 1;

  for (const User* u : {&full, &bare, &empty_optionals, &only_country, &large_times}) {
    CAPTURE(u->id);
    auto created = store.create(*u);
    REQUIRE_MESSAGE(created.ok(), message_of(created));
    check_same_user(created.value(), *u);

    auto by_id = store.find_by_id(u->id);
    REQUIRE_MESSAGE(by_id.ok(), message_of(by_id));
    check_same_user(by_id.value(), *u);

    auto by_email = store.find_by_email(u->email_normalized);
    REQUIRE_MESSAGE(by_email.ok(), message_of(by_email));
    check_same_user(by_email.value(), *u);
  }

  auto missing = store.find_by_id(make_id(99));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::not_found);
  auto missing_email = store.find_by_email("nobody@example.com");
  REQUIRE_FALSE(missing_email.ok());
  CHECK(missing_email.error().code == Errc::not_found);
  // Lookups by email use the normalized form only.
  CHECK(store.find_by_email(full.email).error().code == Errc::not_found);
}

STORE_CONTRACT_CASE("duplicate normalized email or id is a conflict") {
  REQUIRE(store.create(make_user(1)).ok());

  User same_email = make_user(2);
  same_email.email = "USER1@example.com";
  same_email.email_normalized = "user1@example.com";
  auto dup = store.create(same_email);
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code == Errc::conflict);
  CHECK(dup.error().message == "email already registered");

  User same_id = make_user(3);
  same_id.id = make_id(1);
  auto dup_id = store.create(same_id);
  REQUIRE_FALSE(dup_id.ok());
  CHECK(dup_id.error().code == Errc::conflict);
  CHECK(dup_id.error().message == "user id already exists");

  CHECK(store.find_by_id(make_id(2)).error().code == Errc::not_found);
  CHECK(store.find_by_email(make_user(3).email_normalized).error().code == Errc::not_found);
  CHECK(store.list({}).value().total == 1);
}

STORE_CONTRACT_CASE("update is guarded by version") {
  User with_optionals = make_user(1);
  with_optionals.phone = "+1 555 0100";
  with_optionals.country = "US";
  with_optionals.state = "CA";
  REQUIRE(store.create(with_optionals).ok());
  REQUIRE(store.create(make_user(2)).ok());

  SUBCASE("bumps the version and persists every field") {
    User changed = with_optionals;
    changed.email = "New@Example.com";
    changed.email_normalized = "new@example.com";
    changed.first_name = "Renamed";
    changed.last_name = "Relast";
    changed.phone = "+44 20 7946 0000";
    changed.role = Role::admin;
    changed.password_hash = "$argon2id$v=19$m=65536,t=3,p=1$bmV3$bmV3aGFzaA";
    changed.created_at_ms -= 1000;
    changed.updated_at_ms += 5000;
    auto updated = store.update(changed);
    REQUIRE_MESSAGE(updated.ok(), message_of(updated));
    CHECK(updated.value().version == 2);

    User expected = changed;
    expected.version = 2;
    check_same_user(updated.value(), expected);
    check_same_user(store.find_by_id(changed.id).value(), expected);
    check_same_user(store.find_by_email("new@example.com").value(), expected);
    CHECK(store.find_by_email(with_optionals.email_normalized).error().code == Errc::not_found);

    // The returned version is the one to send next time.
    User again = updated.value();
    again.last_name = "Again";
    auto second = store.update(again);
    REQUIRE(second.ok());
    CHECK(second.value().version == 3);
    CHECK(store.find_by_id(changed.id).value().last_name == "Again");
  }

  SUBCASE("optionals set to nullopt are cleared, others kept or set") {
    User cleared = with_optionals;
    cleared.phone.reset();
    cleared.state.reset();
    auto updated = store.update(cleared);
    REQUIRE_MESSAGE(updated.ok(), message_of(updated));
    auto stored = store.find_by_id(cleared.id).value();
    CHECK_FALSE(stored.phone.has_value());
    CHECK(stored.country == "US");
    CHECK_FALSE(stored.state.has_value());

    User all_cleared = updated.value();
    all_cleared.country.reset();
    REQUIRE(store.update(all_cleared).ok());
    stored = store.find_by_id(cleared.id).value();
    CHECK_FALSE(stored.phone.has_value());
    CHECK_FALSE(stored.country.has_value());
    CHECK_FALSE(stored.state.has_value());
    CHECK(stored.version == 3);

    User set_again = stored;
    set_again.state = "";
    auto reset = store.update(set_again);
    REQUIRE(reset.ok());
    CHECK(store.find_by_id(cleared.id).value().state == std::optional<std::string>(""));
  }

  SUBCASE("a stale version is a failed precondition and changes nothing") {
    User first = with_optionals;
    first.first_name = "Winner";
    REQUIRE(store.update(first).ok());

    User stale = with_optionals;  // still version 1
    stale.first_name = "Loser";
    auto lost = store.update(stale);
    REQUIRE_FALSE(lost.ok());
    CHECK(lost.error().code == Errc::precondition_failed);
    auto stored = store.find_by_id(stale.id).value();
    CHECK(stored.first_name == "Winner");
    CHECK(stored.version == 2);

    User future = stored;
    future.version = 3;  // ahead of the store is just as stale
    CHECK(store.update(future).error().code == Errc::precondition_failed);
  }

  SUBCASE("an unknown id is not found") {
    auto r = store.update(make_user(42));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::not_found);
    CHECK(store.find_by_id(make_id(42)).error().code == Errc::not_found);  // no upsert
  }

  SUBCASE("taking another user's email is a conflict") {
    User thief = make_user(2);
    thief.email_normalized = with_optionals.email_normalized;
    auto r = store.update(thief);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::conflict);
    CHECK(r.error().message == "email already registered");
    auto stored = store.find_by_id(thief.id).value();
    CHECK(stored.email_normalized == make_user(2).email_normalized);
    CHECK(stored.version == 1);
  }
}

STORE_CONTRACT_CASE("userName is optional, found ignoring case, and unique ignoring case when present") {
  // Many users without one: absence is never a clash (a sparse index on MongoDB, NULLs on SQLite).
  for (unsigned n = 1; n <= 3; ++n) REQUIRE(store.create(make_user(n)).ok());
  User ada = make_user(10);
  ada.user_name = "Ada.Lovelace";
  auto created = store.create(ada);
  REQUIRE_MESSAGE(created.ok(), message_of(created));
  check_same_user(store.find_by_id(ada.id).value(), ada);
  check_same_user(store.find_by_user_name("ada.lovelace").value(), ada);
  check_same_user(store.find_by_user_name("ADA.LOVELACE").value(), ada);
  CHECK(store.find_by_user_name("ada").error().code == Errc::not_found);
  CHECK_FALSE(store.find_by_id(make_id(1)).value().user_name.has_value());

  User twin = make_user(11);
  twin.user_name = "ADA.lovelace";
  auto clash = store.create(twin);
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error().code == Errc::conflict);
  CHECK(clash.error().message == kUserNameTakenMessage);
  CHECK(store.find_by_id(twin.id).error().code == Errc::not_found);

  SUBCASE("update and put refuse another user's userName") {
    User bob = make_user(1);
    bob.user_name = "ada.LOVELACE";
    auto updated = store.update(bob);
    REQUIRE_FALSE(updated.ok());
    CHECK(updated.error().code == Errc::conflict);
    CHECK(updated.error().message == kUserNameTakenMessage);
    auto put = store.put(twin);
    REQUIRE_FALSE(put.ok());
    CHECK(put.error().code == Errc::conflict);
    CHECK(put.error().message == kUserNameTakenMessage);
    CHECK_FALSE(store.find_by_id(make_id(1)).value().user_name.has_value());
  }

  SUBCASE("clearing a userName frees it; changing its case is allowed") {
    User recased = ada;
    recased.user_name = "ADA.LOVELACE";
    auto updated = store.update(recased);
    REQUIRE_MESSAGE(updated.ok(), message_of(updated));
    CHECK(store.find_by_id(ada.id).value().user_name == "ADA.LOVELACE");
    User cleared = updated.value();
    cleared.user_name.reset();
    REQUIRE(store.update(cleared).ok());
    CHECK_FALSE(store.find_by_id(ada.id).value().user_name.has_value());
    CHECK(store.find_by_user_name("ada.lovelace").error().code == Errc::not_found);
    auto reused = store.create(twin);
    REQUIRE_MESSAGE(reused.ok(), message_of(reused));
    check_same_user(store.find_by_user_name("Ada.Lovelace").value(), twin);
  }

  SUBCASE("put keeps the userName as given, and an email clash is still told apart") {
    User put_user = make_user(20);
    put_user.user_name = "grace_h";
    REQUIRE(store.put(put_user).ok());
    check_same_user(store.find_by_user_name("GRACE_H").value(), put_user);
    User same_email = make_user(21);
    same_email.email_normalized = ada.email_normalized;
    same_email.user_name = "someone.else";
    auto dup = store.create(same_email);
    REQUIRE_FALSE(dup.ok());
    CHECK(dup.error().message == kEmailTakenMessage);
  }
}

STORE_CONTRACT_CASE("remove with and without an expected version") {
  REQUIRE(store.create(make_user(1)).ok());
  REQUIRE(store.create(make_user(2)).ok());

  auto stale = store.remove(make_id(1), 7);
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().code == Errc::precondition_failed);
  CHECK(store.find_by_id(make_id(1)).ok());

  CHECK(store.remove(make_id(1), 1).ok());
  CHECK(store.find_by_id(make_id(1)).error().code == Errc::not_found);
  CHECK(store.remove(make_id(1), 1).error().code == Errc::not_found);

  CHECK(store.remove(make_id(2), std::nullopt).ok());
  CHECK(store.remove(make_id(2), std::nullopt).error().code == Errc::not_found);
  CHECK(store.list({}).value().total == 0);

  // The email of a removed user is free again.
  CHECK(store.create(make_user(1)).ok());
}

STORE_CONTRACT_CASE("keyset and offset pagination") {
  SUBCASE("an empty store") {
    auto page = store.list({});
    REQUIRE_MESSAGE(page.ok(), message_of(page));
    CHECK(page.value().users.empty());
    CHECK(page.value().total == 0);
    CHECK_FALSE(page.value().has_more_after);
    CHECK_FALSE(page.value().has_more_before);
  }

  // Inserted out of order: the store, not insertion order, sorts by id.
  for (unsigned n = 25; n >= 1; --n) REQUIRE(store.create(make_user(n)).ok());

  SUBCASE("the default request") {
    auto page = store.list({}).value();
    CHECK(ids_of(page) == id_range(1, 20));
    CHECK(page.has_more_after);
    CHECK_FALSE(page.has_more_before);
    CHECK(page.total == 25);
    check_same_user(page.users.front(), make_user(1));  // listed users are complete
  }

  SUBCASE("forward with after_id") {
    PageRequest req;
    req.limit = 10;
    auto p1 = store.list(req).value();
    CHECK(ids_of(p1) == id_range(1, 10));
    CHECK(p1.has_more_after);
    CHECK_FALSE(p1.has_more_before);
    CHECK(p1.total == 25);

    req.after_id = p1.users.back().id;
    auto p2 = store.list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_after);
    CHECK(p2.has_more_before);

    req.after_id = p2.users.back().id;
    auto p3 = store.list(req).value();
    CHECK(ids_of(p3) == id_range(21, 25));
    CHECK_FALSE(p3.has_more_after);
    CHECK(p3.has_more_before);
    CHECK(p3.total == 25);

    req.after_id = p3.users.back().id;
    auto past_end = store.list(req).value();
    CHECK(past_end.users.empty());
    CHECK_FALSE(past_end.has_more_after);
    CHECK(past_end.has_more_before);

    // An after_id that names no user (deleted meanwhile) still pages by position in id order.
    REQUIRE(store.remove(make_id(10), std::nullopt).ok());
    req.after_id = make_id(10);
    auto after_gap = store.list(req).value();
    CHECK(ids_of(after_gap) == id_range(11, 20));
    CHECK(after_gap.has_more_before);
    CHECK(after_gap.has_more_after);
    CHECK(after_gap.total == 24);

    req.after_id = make_id(0);  // before every id
    req.limit = 25;
    auto everything = store.list(req).value();
    CHECK(everything.users.size() == 24);
    CHECK_FALSE(everything.has_more_before);
    CHECK_FALSE(everything.has_more_after);
  }

  SUBCASE("backward with before_id") {
    PageRequest req;
    req.limit = 10;
    req.before_id = "ffffffffffffffffffffffff";  // after every id: the last page
    auto last = store.list(req).value();
    CHECK(ids_of(last) == id_range(16, 25));
    CHECK(last.has_more_before);
    CHECK_FALSE(last.has_more_after);
    CHECK(last.total == 25);

    req.before_id = make_id(21);
    auto p2 = store.list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_before);
    CHECK(p2.has_more_after);

    req.before_id = p2.users.front().id;
    auto p1 = store.list(req).value();
    CHECK(ids_of(p1) == id_range(1, 10));
    CHECK_FALSE(p1.has_more_before);
    CHECK(p1.has_more_after);

    req.before_id = p1.users.front().id;
    auto before_start = store.list(req).value();
    CHECK(before_start.users.empty());
    CHECK_FALSE(before_start.has_more_before);
    CHECK(before_start.has_more_after);

    req.before_id = make_id(6);  // a short first page
    auto short_page = store.list(req).value();
    CHECK(ids_of(short_page) == id_range(1, 5));
    CHECK_FALSE(short_page.has_more_before);
    CHECK(short_page.has_more_after);
  }

  SUBCASE("offset pages") {
    PageRequest req;
    req.limit = 10;
    req.offset = 10;
    auto p2 = store.list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_before);
    CHECK(p2.has_more_after);

    req.offset = 20;
    auto p3 = store.list(req).value();
    CHECK(ids_of(p3) == id_range(21, 25));
    CHECK(p3.has_more_before);
    CHECK_FALSE(p3.has_more_after);

    req.offset = 15;
    auto exact_end = store.list(req).value();
    CHECK(ids_of(exact_end) == id_range(16, 25));
    CHECK_FALSE(exact_end.has_more_after);

    req.offset = 100;
    auto beyond = store.list(req).value();
    CHECK(beyond.users.empty());
    CHECK(beyond.total == 25);
    CHECK_FALSE(beyond.has_more_after);

    req.offset = 0;
    req.limit = 25;
    auto all = store.list(req).value();
    CHECK(ids_of(all) == id_range(1, 25));
    CHECK_FALSE(all.has_more_after);
    CHECK_FALSE(all.has_more_before);
  }

  SUBCASE("bad requests are invalid, not outages") {
    PageRequest both;
    both.after_id = make_id(1);
    both.before_id = make_id(5);
    CHECK(store.list(both).error().code == Errc::invalid);
    PageRequest zero;
    zero.limit = 0;
    CHECK(store.list(zero).error().code == Errc::invalid);
    PageRequest negative;
    negative.offset = -1;
    CHECK(store.list(negative).error().code == Errc::invalid);
  }
}

STORE_CONTRACT_CASE("malformed ids are not found, never errors") {
  REQUIRE(store.create(make_user(0xabc)).ok());
  const std::string existing = make_id(0xabc);
  std::string upper = existing;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  REQUIRE(upper != existing);

  const std::vector<std::string> malformed = {
      "",           "xyz",          existing.substr(1),  existing + "0", upper,
      "g" + existing.substr(1),     "{\"$ne\": null}",   std::string(24, ' '),
      std::string("00000000000000000000abc\0", 24),  // embedded NUL
  };
  for (const auto& id : malformed) {
    CAPTURE(id);
    auto found = store.find_by_id(id);
    REQUIRE_FALSE(found.ok());
    CHECK(found.error().code == Errc::not_found);

    User u = make_user(0xabc);
    u.id = id;
    auto updated = store.update(u);
    REQUIRE_FALSE(updated.ok());
    CHECK(updated.error().code == Errc::not_found);

    CHECK(store.remove(id, std::nullopt).error().code == Errc::not_found);
    CHECK(store.remove(id, 1).error().code == Errc::not_found);
  }
  auto still = store.find_by_id(existing);
  REQUIRE(still.ok());
  CHECK(still.value().version == 1);
}

STORE_CONTRACT_CASE("strings are values, never operators") {
  REQUIRE(store.create(make_user(1)).ok());
  REQUIRE(store.create(make_user(2)).ok());

  for (const std::string probe : {R"({"$ne": ""})", R"({"$gt": ""})", R"({"$regex": ".*"})", "$ne", ".*", ""}) {
    CAPTURE(probe);
    auto r = store.find_by_email(probe);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::not_found);
  }

  // Operator-looking values are stored and found verbatim.
  User odd = make_user(3);
  odd.email = R"({"$ne": ""})";
  odd.email_normalized = R"({"$ne": ""})";
  odd.first_name = "$set";
  odd.last_name = "a.b";
  odd.phone = "$where";
  auto created = store.create(odd);
  REQUIRE_MESSAGE(created.ok(), message_of(created));
  auto found = store.find_by_email(odd.email_normalized);
  REQUIRE(found.ok());
  check_same_user(found.value(), odd);
  CHECK(store.list({}).value().total == 3);
}

STORE_CONTRACT_CASE("ping answers and describe names the store") {
  auto pinged = store.ping();
  CHECK_MESSAGE(pinged.ok(), message_of(pinged));
  CHECK_FALSE(store.describe().empty());
}

STORE_CONTRACT_CASE("concurrent creates from 8 threads") {
  constexpr unsigned kThreads = 8, kPerThread = 20;  // more threads than the fixture's 4 pooled connections
  ThreadErrors errors;
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] { create_and_read(store, t * kPerThread + 1, kPerThread, errors); });
    }
  }
  CHECK(errors.messages.empty());
  for (const auto& m : errors.messages) MESSAGE(m);

  PageRequest all;
  all.limit = 100;
  auto first = store.list(all).value();
  CHECK(first.total == kThreads * kPerThread);
  CHECK(ids_of(first) == id_range(1, 100));
  all.after_id = first.users.back().id;
  auto rest = store.list(all).value();
  CHECK(ids_of(rest) == id_range(101, kThreads * kPerThread));
  CHECK_FALSE(rest.has_more_after);
}

STORE_CONTRACT_CASE("racing creates of one email: exactly one wins") {
  constexpr unsigned kThreads = 8;
  std::atomic<int> created{0}, conflicts{0};
  ThreadErrors errors;
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        User u = make_user(100 + t);
        u.email = "Same@Example.com";
        u.email_normalized = "same@example.com";
        auto r = store.create(u);
        if (r.ok()) ++created;
        else if (r.error().code == Errc::conflict && r.error().message == "email already registered") ++conflicts;
        else errors.add("create " + u.id + ": " + r.error().message);
      });
    }
  }
  CHECK(errors.messages.empty());
  for (const auto& m : errors.messages) MESSAGE(m);
  CHECK(created.load() == 1);
  CHECK(conflicts.load() == static_cast<int>(kThreads) - 1);
  CHECK(store.list({}).value().total == 1);
}

// ---------------------------------------------------------------------------------------------
// MongoDB only

// Reads the raw stored document, to check the schema other tools (and future migrations) see.
OwnedBson raw_document(const MongoFixture& fixture, const std::string& id) {
  std::unique_ptr<mongoc_client_t, MongoClientDeleter> client(mongoc_client_new(fixture.url().c_str()));
  REQUIRE(client);
  std::unique_ptr<mongoc_collection_t, MongoCollectionDeleter> users(
      mongoc_client_get_collection(client.get(), fixture.database().c_str(), "users"));
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, id.c_str());
  OwnedBson filter(BCON_NEW("_id", BCON_OID(&oid)));
  std::unique_ptr<mongoc_cursor_t, MongoCursorDeleter> cursor(
      mongoc_collection_find_with_opts(users.get(), filter.get(), nullptr, nullptr));
  const bson_t* doc = nullptr;
  OwnedBson copy;
  if (mongoc_cursor_next(cursor.get(), &doc)) copy = OwnedBson(bson_copy(doc));
  REQUIRE_MESSAGE(copy, "no stored document for " << id);
  return copy;
}

bson_type_t field_type(const bson_t* doc, const char* field) {
  bson_iter_t it;
  if (!bson_iter_init_find(&it, doc, field)) return BSON_TYPE_EOD;  // absent
  return bson_iter_type(&it);
}

TEST_CASE("mongo store: stored documents are typed BSON" * doctest::test_suite("mongo")) {
  MongoFixture fixture;
  User u = make_user(7);
  u.phone = "+1 555 0100";
  REQUIRE(fixture.store().create(u).ok());

  auto doc = raw_document(fixture, u.id);
  CHECK(field_type(doc.get(), "_id") == BSON_TYPE_OID);
  CHECK(field_type(doc.get(), "email") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "emailNormalized") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "firstName") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "lastName") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "phone") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "country") == BSON_TYPE_EOD);
  CHECK(field_type(doc.get(), "state") == BSON_TYPE_EOD);
  CHECK(field_type(doc.get(), "role") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "passwordHash") == BSON_TYPE_UTF8);
  CHECK(field_type(doc.get(), "createdAt") == BSON_TYPE_DATE_TIME);
  CHECK(field_type(doc.get(), "updatedAt") == BSON_TYPE_DATE_TIME);
  CHECK(field_type(doc.get(), "version") == BSON_TYPE_INT64);

  u.phone.reset();
  REQUIRE(fixture.store().update(u).ok());
  doc = raw_document(fixture, u.id);
  CHECK(field_type(doc.get(), "phone") == BSON_TYPE_EOD);  // cleared optionals are removed, not nulled
  CHECK(field_type(doc.get(), "version") == BSON_TYPE_INT64);
  bson_iter_t it;
  REQUIRE(bson_iter_init_find(&it, doc.get(), "version"));
  CHECK(bson_iter_int64(&it) == 2);
}

TEST_CASE("mongo store: reopening is idempotent and sees the data" * doctest::test_suite("mongo")) {
  MongoFixture fixture;
  REQUIRE(fixture.store().create(make_user(1)).ok());
  auto again = open_mongo_store({fixture.url(), 2});
  REQUIRE_MESSAGE(again.ok(), message_of(again));
  check_same_user(again.value()->find_by_id(make_id(1)).value(), make_user(1));
  User dup = make_user(2);
  dup.email_normalized = make_user(1).email_normalized;
  CHECK(again.value()->create(dup).error().code == Errc::conflict);  // the index survived the reopen
  CHECK(again.value()->describe() == redact_url(fixture.url()));
}

TEST_CASE("mongo store: every operation needs only one pooled client" * doctest::test_suite("mongo")) {
  // With a pool of one, an operation that popped a second client while holding the first would
  // hang here; the conflict and not-found paths are the ones that make follow-up queries.
  MongoFixture fixture;
  auto opened = open_mongo_store({fixture.url(), /*pool_size=*/1});
  REQUIRE_MESSAGE(opened.ok(), message_of(opened));
  UserStore& store = *opened.value();
  REQUIRE(store.create(make_user(1)).ok());
  REQUIRE(store.create(make_user(2)).ok());
  CHECK(store.create(make_user(1)).error().code == Errc::conflict);  // duplicate id and email
  User dup_email = make_user(3);
  dup_email.email_normalized = make_user(1).email_normalized;
  CHECK(store.create(dup_email).error().code == Errc::conflict);
  User thief = make_user(2);
  thief.email_normalized = make_user(1).email_normalized;
  CHECK(store.update(thief).error().code == Errc::conflict);
  User stale = make_user(1);
  stale.version = 5;
  CHECK(store.update(stale).error().code == Errc::precondition_failed);
  CHECK(store.update(make_user(9)).error().code == Errc::not_found);
  CHECK(store.remove(make_id(1), 5).error().code == Errc::precondition_failed);
  PageRequest after;
  after.after_id = make_id(1);
  CHECK(store.list(after).value().has_more_before);
  PageRequest before;
  before.before_id = make_id(2);
  CHECK(store.list(before).value().has_more_after);
  CHECK(store.ping().ok());
}

// These need no server, so they run with the ordinary unit tests.

TEST_CASE("mongo store: an unreachable server fails fast as unavailable without the password") {
  const std::string url = "mongodb://alice:s3cr%3AetPW@127.0.0.1:1/usersd?serverSelectionTimeoutMS=300";
  const auto started = std::chrono::steady_clock::now();
  auto opened = open_mongo_store({url, 2});
  const auto elapsed = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.error().code == Errc::unavailable);
  CHECK(elapsed < std::chrono::milliseconds(1500));
  const std::string& message = opened.error().message;
  MESSAGE(message);
  CHECK(message.find("s3cr") == std::string::npos);
  CHECK(message.find("etPW") == std::string::npos);
}

TEST_CASE("mongo store: an invalid URL is unavailable without the password") {
  for (const std::string url : {
           "mongodb://alice:hunter2secret@",                                      // no host
           "mongodb://alice:hunter2secret@127.0.0.1:1/?readPreference=bogus",     // bad option value
           "mongodb://alice:hunter2secret:x@127.0.0.1:1/",   // the driver's message quotes this password
           "mongodb://alice:hunter2secret%zz@127.0.0.1:1/",  // bad escape in the password
           "mongodb://alice:hunter2secret@127.0.0.1:1/?authMechanism=MONGODB-X509",  // no password allowed
           "mongodb://alice:hunter2secret@127.0.0.1:1/?tls=true&ssl=false",       // contradictory options
           "mongodb+srv://alice:hunter2secret@a.b/?directConnection=true",       // invalid with SRV
           "mongodb://alice:hunter2secret@127.0.0.1:1/?w=0",                      // unacknowledged writes
       }) {
    CAPTURE(url);
    auto opened = open_mongo_store({url, 1});
    REQUIRE_FALSE(opened.ok());
    CHECK(opened.error().code == Errc::unavailable);
    CHECK(opened.error().message.find("hunter2secret") == std::string::npos);
    MESSAGE(opened.error().message);
  }
}

}  // namespace

STORE_CONTRACT_CASE("put inserts or replaces exactly as given, idempotently") {
  User u = make_user(1);
  u.version = 9;
  u.phone = "+64 21 000";
  auto inserted = store.put(u);
  REQUIRE_MESSAGE(inserted.ok(), message_of(inserted));
  check_same_user(store.find_by_id(u.id).value(), u);

  REQUIRE(store.put(u).ok());  // the same record again changes nothing
  check_same_user(store.find_by_id(u.id).value(), u);

  User changed = u;
  changed.phone.reset();  // replaced, not merged: a cleared optional stays cleared
  changed.version = 3;    // versions are taken as given, even lower ones (a restore)
  changed.last_name = "Restored";
  REQUIRE(store.put(changed).ok());
  check_same_user(store.find_by_id(u.id).value(), changed);
  auto page = store.list(PageRequest{});
  REQUIRE(page.ok());
  CHECK(page.value().total == 1);

  User other = make_user(2);
  other.email = u.email;
  other.email_normalized = u.email_normalized;
  auto clash = store.put(other);
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error().code == Errc::conflict);
}
