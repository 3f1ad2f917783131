// SQLite store: contract of UserStore on a real file, plus migrations, concurrency and failure modes.
#include "common/sqlite_store.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace usersd;

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/usersd-sqlite-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string make_id(unsigned n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%024x", n);
  return buf;
}

std::string lowercase(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

User make_user(unsigned n) {
  User u;
  u.id = make_id(n);
  u.email = "User" + std::to_string(n) + "@Example.COM";
  u.email_normalized = lowercase(u.email);
  u.first_name = "First" + std::to_string(n);
  u.last_name = "Last" + std::to_string(n);
  u.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
  u.created_at_ms = 1'700'000'000'000 + n;
  u.updated_at_ms = u.created_at_ms;
  u.version = 1;
  return u;
}

std::unique_ptr<UserStore> open_store(const std::string& path, int pool_size = 4,
                                      int busy_timeout_ms = 5000) {
  auto store = open_sqlite_store({path, busy_timeout_ms, pool_size});
  REQUIRE_MESSAGE(store.ok(), (store.ok() ? std::string() : store.error().message));
  return std::move(store).value();
}

// Reads or writes PRAGMA user_version through a separate, plain sqlite3 connection.
int raw_user_version(const std::string& path, std::optional<int> set_to = std::nullopt) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  if (set_to) {
    const std::string sql = "PRAGMA user_version = " + std::to_string(*set_to);
    CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  }
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const int version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return version;
}

void check_same_user(const User& got, const User& want) {
  CHECK(got.id == want.id);
  CHECK(got.email == want.email);
  CHECK(got.email_normalized == want.email_normalized);
  CHECK(got.first_name == want.first_name);
  CHECK(got.last_name == want.last_name);
  CHECK(got.phone == want.phone);
  CHECK(got.country == want.country);
  CHECK(got.state == want.state);
  CHECK(got.role == want.role);
  CHECK(got.password_hash == want.password_hash);
  CHECK(got.created_at_ms == want.created_at_ms);
  CHECK(got.updated_at_ms == want.updated_at_ms);
  CHECK(got.version == want.version);
}

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

// Collects failures from worker threads; doctest assertions stay on the test's own thread.
struct ThreadErrors {
  std::mutex mu;
  std::vector<std::string> messages;
  void add(const std::string& m) {
    std::lock_guard lock(mu);
    messages.push_back(m);
  }
};

// create + find_by_id + find_by_email for users [first, first + count).
void create_and_read(UserStore& store, unsigned first, unsigned count, ThreadErrors& errors) {
  for (unsigned n = first; n < first + count; ++n) {
    const User u = make_user(n);
    if (auto r = store.create(u); !r) errors.add("create " + u.id + ": " + r.error().message);
    if (auto r = store.find_by_id(u.id); !r) errors.add("find_by_id " + u.id + ": " + r.error().message);
    if (auto r = store.find_by_email(u.email_normalized); !r || r.value().id != u.id) {
      errors.add("find_by_email " + u.email_normalized);
    }
  }
}

}  // namespace

TEST_CASE("role names round trip and parsing is exact") {
  CHECK(std::string(role_name(Role::user)) == "user");
  CHECK(std::string(role_name(Role::admin)) == "admin");
  CHECK(parse_role("user") == Role::user);
  CHECK(parse_role("admin") == Role::admin);
  CHECK_FALSE(parse_role("Admin").has_value());
  CHECK_FALSE(parse_role("").has_value());
  CHECK_FALSE(parse_role("admin ").has_value());
}

TEST_CASE("sqlite store: create and find round trip every field") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"));

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

  for (const User* u : {&full, &bare, &empty_optionals}) {
    auto created = store->create(*u);
    REQUIRE(created.ok());
    check_same_user(created.value(), *u);

    auto by_id = store->find_by_id(u->id);
    REQUIRE(by_id.ok());
    check_same_user(by_id.value(), *u);

    auto by_email = store->find_by_email(u->email_normalized);
    REQUIRE(by_email.ok());
    check_same_user(by_email.value(), *u);
  }

  auto missing = store->find_by_id(make_id(99));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::not_found);
  auto missing_email = store->find_by_email("nobody@example.com");
  REQUIRE_FALSE(missing_email.ok());
  CHECK(missing_email.error().code == Errc::not_found);
  // Lookups by email use the normalized form only.
  CHECK(store->find_by_email(full.email).error().code == Errc::not_found);
}

TEST_CASE("sqlite store: duplicate normalized email or id is a conflict") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"));
  REQUIRE(store->create(make_user(1)).ok());

  User same_email = make_user(2);
  same_email.email = "USER1@example.com";
  same_email.email_normalized = "user1@example.com";
  auto dup = store->create(same_email);
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code == Errc::conflict);
  CHECK(dup.error().message == "email already registered");

  User same_id = make_user(3);
  same_id.id = make_id(1);
  auto dup_id = store->create(same_id);
  REQUIRE_FALSE(dup_id.ok());
  CHECK(dup_id.error().code == Errc::conflict);

  CHECK(store->find_by_id(make_id(2)).error().code == Errc::not_found);
  CHECK(store->list({}).value().total == 1);
}

TEST_CASE("sqlite store: update is guarded by version") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"));
  REQUIRE(store->create(make_user(1)).ok());
  REQUIRE(store->create(make_user(2)).ok());

  SUBCASE("bumps the version and persists every field") {
    User changed = make_user(1);
    changed.email = "New@Example.com";
    changed.email_normalized = "new@example.com";
    changed.first_name = "Renamed";
    changed.phone = "+44 20 7946 0000";
    changed.role = Role::admin;
    changed.updated_at_ms += 5000;
    auto updated = store->update(changed);
    REQUIRE(updated.ok());
    CHECK(updated.value().version == 2);

    User expected = changed;
    expected.version = 2;
    check_same_user(updated.value(), expected);
    check_same_user(store->find_by_id(changed.id).value(), expected);
    check_same_user(store->find_by_email("new@example.com").value(), expected);
    CHECK(store->find_by_email(make_user(1).email_normalized).error().code == Errc::not_found);

    // The returned version is the one to send next time.
    User again = updated.value();
    again.last_name = "Again";
    auto second = store->update(again);
    REQUIRE(second.ok());
    CHECK(second.value().version == 3);
  }

  SUBCASE("a stale version is a failed precondition and changes nothing") {
    User first = make_user(1);
    first.first_name = "Winner";
    REQUIRE(store->update(first).ok());

    User stale = make_user(1);  // still version 1
    stale.first_name = "Loser";
    auto lost = store->update(stale);
    REQUIRE_FALSE(lost.ok());
    CHECK(lost.error().code == Errc::precondition_failed);
    auto stored = store->find_by_id(stale.id).value();
    CHECK(stored.first_name == "Winner");
    CHECK(stored.version == 2);
  }

  SUBCASE("an unknown id is not found") {
    auto r = store->update(make_user(42));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::not_found);
  }

  SUBCASE("taking another user's email is a conflict") {
    User thief = make_user(2);
    thief.email_normalized = make_user(1).email_normalized;
    auto r = store->update(thief);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::conflict);
    CHECK(r.error().message == "email already registered");
    auto stored = store->find_by_id(thief.id).value();
    CHECK(stored.email_normalized == make_user(2).email_normalized);
    CHECK(stored.version == 1);
  }
}

TEST_CASE("sqlite store: remove with and without an expected version") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"));
  REQUIRE(store->create(make_user(1)).ok());
  REQUIRE(store->create(make_user(2)).ok());

  auto stale = store->remove(make_id(1), 7);
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().code == Errc::precondition_failed);
  CHECK(store->find_by_id(make_id(1)).ok());

  CHECK(store->remove(make_id(1), 1).ok());
  CHECK(store->find_by_id(make_id(1)).error().code == Errc::not_found);
  CHECK(store->remove(make_id(1), 1).error().code == Errc::not_found);

  CHECK(store->remove(make_id(2), std::nullopt).ok());
  CHECK(store->remove(make_id(2), std::nullopt).error().code == Errc::not_found);
  CHECK(store->list({}).value().total == 0);

  // The email of a removed user is free again.
  CHECK(store->create(make_user(1)).ok());
}

TEST_CASE("sqlite store: keyset and offset pagination") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"));

  SUBCASE("an empty store") {
    auto page = store->list({});
    REQUIRE(page.ok());
    CHECK(page.value().users.empty());
    CHECK(page.value().total == 0);
    CHECK_FALSE(page.value().has_more_after);
    CHECK_FALSE(page.value().has_more_before);
  }

  // Inserted out of order: the store, not insertion order, sorts by id.
  for (unsigned n = 25; n >= 1; --n) REQUIRE(store->create(make_user(n)).ok());

  SUBCASE("forward with after_id") {
    PageRequest req;
    req.limit = 10;
    auto p1 = store->list(req).value();
    CHECK(ids_of(p1) == id_range(1, 10));
    CHECK(p1.has_more_after);
    CHECK_FALSE(p1.has_more_before);
    CHECK(p1.total == 25);

    req.after_id = p1.users.back().id;
    auto p2 = store->list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_after);
    CHECK(p2.has_more_before);

    req.after_id = p2.users.back().id;
    auto p3 = store->list(req).value();
    CHECK(ids_of(p3) == id_range(21, 25));
    CHECK_FALSE(p3.has_more_after);
    CHECK(p3.has_more_before);
    CHECK(p3.total == 25);

    req.after_id = p3.users.back().id;
    auto past_end = store->list(req).value();
    CHECK(past_end.users.empty());
    CHECK_FALSE(past_end.has_more_after);
    CHECK(past_end.has_more_before);

    // An after_id that matches no user still pages by position in id order.
    req.after_id = make_id(10) + "z";
    CHECK(ids_of(store->list(req).value()) == id_range(11, 20));
  }

  SUBCASE("backward with before_id") {
    PageRequest req;
    req.limit = 10;
    req.before_id = "ffffffffffffffffffffffff";  // after every id: the last page
    auto last = store->list(req).value();
    CHECK(ids_of(last) == id_range(16, 25));
    CHECK(last.has_more_before);
    CHECK_FALSE(last.has_more_after);

    req.before_id = make_id(21);
    auto p2 = store->list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_before);
    CHECK(p2.has_more_after);

    req.before_id = p2.users.front().id;
    auto p1 = store->list(req).value();
    CHECK(ids_of(p1) == id_range(1, 10));
    CHECK_FALSE(p1.has_more_before);
    CHECK(p1.has_more_after);

    req.before_id = p1.users.front().id;
    auto before_start = store->list(req).value();
    CHECK(before_start.users.empty());
    CHECK_FALSE(before_start.has_more_before);
    CHECK(before_start.has_more_after);

    req.before_id = make_id(6);  // a short first page
    auto short_page = store->list(req).value();
    CHECK(ids_of(short_page) == id_range(1, 5));
    CHECK_FALSE(short_page.has_more_before);
    CHECK(short_page.has_more_after);
  }

  SUBCASE("offset pages") {
    PageRequest req;
    req.limit = 10;
    req.offset = 10;
    auto p2 = store->list(req).value();
    CHECK(ids_of(p2) == id_range(11, 20));
    CHECK(p2.has_more_before);
    CHECK(p2.has_more_after);

    req.offset = 20;
    auto p3 = store->list(req).value();
    CHECK(ids_of(p3) == id_range(21, 25));
    CHECK(p3.has_more_before);
    CHECK_FALSE(p3.has_more_after);

    req.offset = 15;
    req.limit = 10;
    auto exact_end = store->list(req).value();
    CHECK(ids_of(exact_end) == id_range(16, 25));
    CHECK_FALSE(exact_end.has_more_after);

    req.offset = 100;
    auto beyond = store->list(req).value();
    CHECK(beyond.users.empty());
    CHECK(beyond.total == 25);
    CHECK_FALSE(beyond.has_more_after);
  }

  SUBCASE("bad requests are invalid, not outages") {
    PageRequest both;
    both.after_id = make_id(1);
    both.before_id = make_id(5);
    CHECK(store->list(both).error().code == Errc::invalid);
    PageRequest zero;
    zero.limit = 0;
    CHECK(store->list(zero).error().code == Errc::invalid);
    PageRequest negative;
    negative.offset = -1;
    CHECK(store->list(negative).error().code == Errc::invalid);
  }
}

TEST_CASE("sqlite store: reopening keeps data and does not re-migrate") {
  TempDir dir;
  const auto path = dir.file("users.db");
  {
    auto store = open_store(path);
    REQUIRE(store->create(make_user(1)).ok());
  }
  CHECK(raw_user_version(path) == 1);
  auto first = open_store(path);
  auto second = open_store(path);  // two instances at once, like two worker processes
  check_same_user(first->find_by_id(make_id(1)).value(), make_user(1));
  check_same_user(second->find_by_id(make_id(1)).value(), make_user(1));
  CHECK(raw_user_version(path) == 1);
}

TEST_CASE("sqlite store: a schema newer than this build is refused") {
  TempDir dir;
  const auto path = dir.file("users.db");
  { open_store(path); }
  raw_user_version(path, 7);
  auto refused = open_sqlite_store({path});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::unavailable);
  CHECK(refused.error().message == "database schema version 7 is newer than this build supports (1)");
  CHECK(raw_user_version(path) == 7);
}

TEST_CASE("sqlite store: opening failures are unavailable with the reason") {
  TempDir dir;

  SUBCASE("missing directory") {
    auto r = open_sqlite_store({dir.file("no/such/dir/users.db")});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
    CHECK(r.error().message.find("does not exist") != std::string::npos);
    CHECK(r.error().message.find(dir.file("no/such/dir")) != std::string::npos);
  }

  SUBCASE("a file that is not a database") {
    const auto path = dir.file("garbage.db");
    std::ofstream(path) << std::string(4096, 'x');
    auto r = open_sqlite_store({path});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
    CHECK(r.error().message.find(path) != std::string::npos);
    CHECK(r.error().message.find("SQLITE_NOTADB") != std::string::npos);
  }

  SUBCASE("a directory in place of the file") {
    const auto path = dir.file("adir.db");
    std::filesystem::create_directory(path);
    auto r = open_sqlite_store({path});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
    CHECK(r.error().message.find(path) != std::string::npos);
  }
}

TEST_CASE("sqlite store: a held write lock times out as unavailable, reads continue") {
  TempDir dir;
  const auto path = dir.file("users.db");
  auto store = open_store(path, 2, /*busy_timeout_ms=*/100);
  REQUIRE(store->create(make_user(1)).ok());

  sqlite3* other = nullptr;  // another process's writer, holding the write lock
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);

  auto blocked = store->create(make_user(2));
  REQUIRE_FALSE(blocked.ok());
  CHECK(blocked.error().code == Errc::unavailable);
  CHECK(blocked.error().message.find("SQLITE_BUSY") != std::string::npos);
  CHECK(store->find_by_id(make_id(1)).ok());  // WAL: readers are not blocked by the writer
  CHECK(store->ping().ok());

  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  CHECK(store->create(make_user(2)).ok());
}

TEST_CASE("sqlite store: many threads on one store") {
  TempDir dir;
  auto store = open_store(dir.file("users.db"), /*pool_size=*/4);  // fewer connections than threads
  constexpr unsigned kThreads = 8, kPerThread = 50;
  ThreadErrors errors;
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] { create_and_read(*store, t * kPerThread + 1, kPerThread, errors); });
    }
  }
  CHECK(errors.messages.empty());
  for (const auto& m : errors.messages) MESSAGE(m);
  CHECK(store->list({}).value().total == kThreads * kPerThread);
}

TEST_CASE("sqlite store: two store instances on one file at once") {
  TempDir dir;
  const auto path = dir.file("users.db");
  auto a = open_store(path);
  auto b = open_store(path);
  constexpr unsigned kThreadsPerStore = 4, kPerThread = 50;
  ThreadErrors errors;
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < 2 * kThreadsPerStore; ++t) {
      UserStore& store = t % 2 == 0 ? *a : *b;
      threads.emplace_back([&, t] { create_and_read(store, t * kPerThread + 1, kPerThread, errors); });
    }
  }
  CHECK(errors.messages.empty());
  for (const auto& m : errors.messages) MESSAGE(m);
  constexpr int64_t kTotal = 2 * kThreadsPerStore * kPerThread;
  CHECK(a->list({}).value().total == kTotal);
  CHECK(b->list({}).value().total == kTotal);
  // Each instance sees what the other wrote.
  CHECK(a->find_by_id(make_id(kPerThread + 1)).ok());
  CHECK(b->find_by_id(make_id(1)).ok());
}

TEST_CASE("sqlite store: concurrent first opens migrate exactly once") {
  TempDir dir;
  const auto path = dir.file("fresh.db");
  constexpr int kOpeners = 6;
  std::latch start(kOpeners);
  std::vector<std::optional<Result<std::unique_ptr<UserStore>>>> opened(kOpeners);
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kOpeners; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        opened[i].emplace(open_sqlite_store({path, 5000, 2}));
      });
    }
  }
  for (auto& r : opened) {
    REQUIRE(r.has_value());
    CHECK_MESSAGE(r->ok(), (r->ok() ? std::string() : r->error().message));
  }
  CHECK(raw_user_version(path) == 1);
}

TEST_CASE("sqlite store: separate processes share one file") {
  TempDir dir;
  const auto path = dir.file("shared.db");
  constexpr unsigned kProcesses = 4, kPerProcess = 50;
  std::vector<pid_t> children;
  for (unsigned p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Child: no doctest here; report through the exit status and skip atexit handlers.
      int failures = 0;
      {
        auto store = open_sqlite_store({path, 5000, 2});
        if (!store) ::_exit(100);
        for (unsigned n = p * kPerProcess + 1; n <= (p + 1) * kPerProcess; ++n) {
          if (!store.value()->create(make_user(n))) ++failures;
          if (!store.value()->find_by_id(make_id(n))) ++failures;
        }
      }
      ::_exit(failures > 99 ? 99 : failures);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto store = open_store(path);
  CHECK(store->list({}).value().total == kProcesses * kPerProcess);
  CHECK(raw_user_version(path) == 1);
}

TEST_CASE("sqlite store: ping and describe") {
  TempDir dir;
  const auto path = dir.file("users.db");
  auto store = open_store(path);
  CHECK(store->describe() == "sqlite://" + path);
  CHECK(store->ping().ok());

  SUBCASE("the database file was deleted") {
    std::filesystem::remove(path);
    auto r = store->ping();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
    CHECK(r.error().message.find(path) != std::string::npos);
  }

  SUBCASE("the database file was replaced") {
    std::filesystem::remove(path);
    std::ofstream(path) << "";
    auto r = store->ping();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
  }
}

TEST_CASE("sqlite store: describe uses the absolute path") {
  TempDir dir;
  const auto path = dir.file("rel.db");
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(std::filesystem::path(path).parent_path());
  auto store = open_sqlite_store({"./rel.db"});
  std::filesystem::current_path(cwd);
  REQUIRE(store.ok());
  CHECK(store.value()->describe() == "sqlite://" + path);
}
