// SQLite store: contract of UserStore on a real file, plus migrations, concurrency and failure modes.
#include "common/sqlite_store.hpp"
#include "tests/unit/store_test_support.hpp"

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
using namespace usersd::testing;

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

std::unique_ptr<UserStore> open_store(const std::string& path, int pool_size = 4,
                                      int busy_timeout_ms = 5000) {
  auto store = open_sqlite_store({path, busy_timeout_ms, pool_size});
  REQUIRE_MESSAGE(store.ok(), (store.ok() ? std::string() : store.error().message));
  return std::move(store).value();
}

constexpr int kCurrentSchema = 2;  // 1: users; 2: userName

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

// Behaviour every store shares (round trips, conflicts, versioned writes, pagination, concurrency) is
// checked once for both stores in store_contract_test.cpp; what is here is SQLite's own: the file,
// migrations, locks and processes.

TEST_CASE("sqlite store: reopening keeps data and does not re-migrate") {
  TempDir dir;
  const auto path = dir.file("users.db");
  {
    auto store = open_store(path);
    REQUIRE(store->create(make_user(1)).ok());
  }
  CHECK(raw_user_version(path) == kCurrentSchema);
  auto first = open_store(path);
  auto second = open_store(path);  // two instances at once, like two worker processes
  check_same_user(first->find_by_id(make_id(1)).value(), make_user(1));
  check_same_user(second->find_by_id(make_id(1)).value(), make_user(1));
  CHECK(raw_user_version(path) == kCurrentSchema);
}

TEST_CASE("sqlite store: a version 1 file (before userName) is migrated and keeps its users") {
  TempDir dir;
  const auto path = dir.file("users.db");
  {
    // The schema exactly as version 1 shipped it, with one user in it.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) == SQLITE_OK);
    const char* v1 = R"sql(
CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, email_normalized TEXT NOT NULL, first_name TEXT NOT NULL,
  last_name TEXT NOT NULL, phone TEXT, country TEXT, state TEXT, role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
  password_hash TEXT NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX users_email_normalized ON users(email_normalized);
INSERT INTO users VALUES ('000000000000000000000001', 'User1@Example.COM', 'user1@example.com', 'First1', 'Last1',
  NULL, NULL, NULL, 'user', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', 1700000000001, 1700000000001, 1);
PRAGMA user_version = 1;
)sql";
    CHECK(sqlite3_exec(db, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = open_store(path);
  CHECK(raw_user_version(path) == kCurrentSchema);
  check_same_user(store->find_by_id(make_id(1)).value(), make_user(1));
  User named = make_user(2);
  named.user_name = "Ada.L";
  REQUIRE(store->create(named).ok());
  CHECK(store->find_by_user_name("ada.l").value().id == make_id(2));
}

TEST_CASE("sqlite store: a schema newer than this build is refused") {
  TempDir dir;
  const auto path = dir.file("users.db");
  { open_store(path); }
  raw_user_version(path, 7);
  auto refused = open_sqlite_store({path});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::unavailable);
  CHECK(refused.error().message == "database schema version 7 is newer than this build supports (2)");
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
  CHECK(raw_user_version(path) == kCurrentSchema);
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
  CHECK(raw_user_version(path) == kCurrentSchema);
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
