// UserStore on one SQLite file in WAL mode: a small pool of single-thread connections per process,
// with many processes (the prefork workers) sharing the file through SQLite's own locking.
#include "common/sqlite_store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace usersd {
namespace {

// ---------------------------------------------------------------------------------------------
// Schema and statements

// Entry i moves the schema from user_version i to i + 1. Append only: never edit a shipped step.
constexpr std::array<const char*, 2> kMigrations = {
    R"sql(
CREATE TABLE users (
  id               TEXT PRIMARY KEY,
  email            TEXT NOT NULL,
  email_normalized TEXT NOT NULL,
  first_name       TEXT NOT NULL,
  last_name        TEXT NOT NULL,
  phone            TEXT,
  country          TEXT,
  state            TEXT,
  role             TEXT NOT NULL CHECK (role IN ('user', 'admin')),
  password_hash    TEXT NOT NULL,
  created_at_ms    INTEGER NOT NULL,
  updated_at_ms    INTEGER NOT NULL,
  version          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX users_email_normalized ON users(email_normalized);
)sql",
    // 2: the Node.js service's userName. NULLs are distinct in a SQLite unique index, so only users that
    // have one are constrained; NOCASE folds exactly the ASCII letters the userName charset allows.
    R"sql(
ALTER TABLE users ADD COLUMN user_name TEXT;
CREATE UNIQUE INDEX users_user_name ON users(user_name COLLATE NOCASE);
)sql",
};
constexpr int kSchemaVersion = static_cast<int>(kMigrations.size());

// Column order shared by every SELECT and by read_user().
#define USERSD_USER_COLUMNS                                                                  \
  "id, email, email_normalized, first_name, last_name, phone, country, state, role, "       \
  "password_hash, created_at_ms, updated_at_ms, user_name, version"

constexpr const char* kInsertUser = "INSERT INTO users (" USERSD_USER_COLUMNS
                                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
constexpr const char* kPutUser =
    "INSERT INTO users (" USERSD_USER_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET email = excluded.email, email_normalized = excluded.email_normalized, "
    "first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone, "
    "country = excluded.country, state = excluded.state, role = excluded.role, "
    "password_hash = excluded.password_hash, created_at_ms = excluded.created_at_ms, "
    "updated_at_ms = excluded.updated_at_ms, user_name = excluded.user_name, version = excluded.version";
constexpr const char* kSelectById = "SELECT " USERSD_USER_COLUMNS " FROM users WHERE id = ?";
constexpr const char* kSelectByEmail =
    "SELECT " USERSD_USER_COLUMNS " FROM users WHERE email_normalized = ?";
// COLLATE NOCASE on the comparison lets SQLite use the users_user_name index.
constexpr const char* kSelectByUserName =
    "SELECT " USERSD_USER_COLUMNS " FROM users WHERE user_name = ? COLLATE NOCASE";
constexpr const char* kListAfter =
    "SELECT " USERSD_USER_COLUMNS " FROM users WHERE id > ? ORDER BY id LIMIT ?";
constexpr const char* kListBefore =
    "SELECT " USERSD_USER_COLUMNS " FROM users WHERE id < ? ORDER BY id DESC LIMIT ?";
constexpr const char* kListOffset =
    "SELECT " USERSD_USER_COLUMNS " FROM users ORDER BY id LIMIT ? OFFSET ?";
#undef USERSD_USER_COLUMNS

constexpr const char* kUpdateUser =
    "UPDATE users SET email = ?, email_normalized = ?, first_name = ?, last_name = ?, phone = ?, "
    "country = ?, state = ?, role = ?, password_hash = ?, created_at_ms = ?, updated_at_ms = ?, "
    "user_name = ?, version = version + 1 WHERE id = ? AND version = ?";
constexpr const char* kDeleteUser = "DELETE FROM users WHERE id = ?";
constexpr const char* kDeleteUserAtVersion = "DELETE FROM users WHERE id = ? AND version = ?";
constexpr const char* kUserExists = "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)";
constexpr const char* kAnyIdAtOrBelow = "SELECT EXISTS (SELECT 1 FROM users WHERE id <= ?)";
constexpr const char* kAnyIdAtOrAbove = "SELECT EXISTS (SELECT 1 FROM users WHERE id >= ?)";
constexpr const char* kCountUsers = "SELECT count(*) FROM users";
constexpr const char* kUserVersion = "PRAGMA user_version";
constexpr const char* kPing = "SELECT count(*) FROM sqlite_master";

enum Column : int {
  kColId,
  kColEmail,
  kColEmailNormalized,
  kColFirstName,
  kColLastName,
  kColPhone,
  kColCountry,
  kColState,
  kColRole,
  kColPasswordHash,
  kColCreatedAt,
  kColUpdatedAt,
  kColUserName,
  kColVersion,
};

// ---------------------------------------------------------------------------------------------
// Errors

const char* code_name(int rc) {
  switch (rc & 0xff) {
    case SQLITE_ERROR: return "SQLITE_ERROR";
    case SQLITE_INTERNAL: return "SQLITE_INTERNAL";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_ABORT: return "SQLITE_ABORT";
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_PROTOCOL: return "SQLITE_PROTOCOL";
    case SQLITE_SCHEMA: return "SQLITE_SCHEMA";
    case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_MISMATCH: return "SQLITE_MISMATCH";
    case SQLITE_MISUSE: return "SQLITE_MISUSE";
    case SQLITE_NOLFS: return "SQLITE_NOLFS";
    case SQLITE_AUTH: return "SQLITE_AUTH";
    case SQLITE_RANGE: return "SQLITE_RANGE";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    default: return "SQLITE_UNKNOWN";
  }
}

// Maps a failed sqlite call to the store's error vocabulary. `db` may be null (open failures).
Error sqlite_error(sqlite3* db, int rc, std::string_view what) {
  const std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    if (detail.find("email_normalized") != std::string::npos) {
      return {Errc::conflict, "email already registered"};
    }
    if (detail.find("users.id") != std::string::npos) return {Errc::conflict, "user id already exists"};
    if (detail.find("user_name") != std::string::npos) return {Errc::conflict, kUserNameTakenMessage};
    return {Errc::conflict, detail};
  }
  // Other constraints (CHECK, NOT NULL) and oversized values are bad input, not an outage.
  const int primary = rc & 0xff;
  const Errc code = (primary == SQLITE_CONSTRAINT || primary == SQLITE_TOOBIG) ? Errc::invalid
                                                                              : Errc::unavailable;
  return {code, std::string(what) + ": " + detail + " (" + code_name(rc) + ", code " +
                    std::to_string(rc) + ")"};
}

Error unavailable(std::string message) { return {Errc::unavailable, std::move(message)}; }

// ---------------------------------------------------------------------------------------------
// RAII handles

struct DbCloser {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using StmtHandle = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// A cached statement borrowed for one use: binds positionally, and on scope exit resets and
// clears its bindings so the next borrower starts clean and no read lock is held.
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), next_(other.next_), rc_(other.rc_) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;
  ~Statement() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  // Bound SQLITE_STATIC (no copy): every caller keeps the value alive until the statement resets.
  Statement& bind_text(std::string_view value) {
    return record(sqlite3_bind_text64(stmt_, next_++, value.data(), value.size(), SQLITE_STATIC,
                                      SQLITE_UTF8));
  }
  Statement& bind_optional(const std::optional<std::string>& value) {
    if (!value) return record(sqlite3_bind_null(stmt_, next_++));
    return bind_text(*value);
  }
  Statement& bind_int(int64_t value) { return record(sqlite3_bind_int64(stmt_, next_++, value)); }

  // First binding error, so a chain of binds is checked once.
  int bind_status() const { return rc_; }
  int step() { return sqlite3_step(stmt_); }
  sqlite3_stmt* get() const { return stmt_; }
  sqlite3* db() const { return db_; }

 private:
  Statement& record(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int next_ = 1;
  int rc_ = SQLITE_OK;
};

// One sqlite3 connection plus its prepared statements; used by one thread at a time (NOMUTEX).
class Connection {
 public:
  static Result<std::unique_ptr<Connection>> open(const std::string& path, int busy_timeout_ms);

  sqlite3* db() const { return db_.get(); }

  // Prepares `sql` once per connection; `sql` must be a string with static storage (cache key).
  Result<Statement> statement(const char* sql) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) {
      sqlite3_stmt* raw = nullptr;
      const int rc = sqlite3_prepare_v3(db(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
      StmtHandle handle(raw);
      if (rc != SQLITE_OK) return sqlite_error(db(), rc, "prepare statement");
      it = statements_.emplace(sql, std::move(handle)).first;
    }
    return Statement(db(), it->second.get());
  }

  // Runs one or more uncached statements (migrations, pragmas, transaction control).
  Status run_script(const std::string& sql, std::string_view what) {
    const int rc = sqlite3_exec(db(), sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(db(), rc, what);
    return ok_status();
  }

 private:
  explicit Connection(DbHandle db) : db_(std::move(db)) {}

  DbHandle db_;  // declared first so it is closed after the statements are finalized
  std::unordered_map<std::string_view, StmtHandle> statements_;
};

// Applies the per-connection settings the store relies on.
Status configure(sqlite3* db, const std::string& path, int busy_timeout_ms) {
  sqlite3_extended_result_codes(db, 1);  // tells SQLITE_CONSTRAINT_UNIQUE apart from CHECK
  sqlite3_busy_timeout(db, busy_timeout_ms);

  // journal_mode answers with the mode actually in effect; anything but "wal" means readers and
  // writers in other processes would block each other. Switching needs an exclusive lock, and SQLite
  // does not call the busy handler for it, so when several workers open a new file at once, retry here.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  int rc = SQLITE_BUSY;
  std::string mode_name;
  while (true) {
    sqlite3_stmt* raw = nullptr;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    StmtHandle pragma(raw);
    if (rc == SQLITE_OK) rc = sqlite3_step(pragma.get());
    if (rc == SQLITE_ROW) {
      const auto* mode = reinterpret_cast<const char*>(sqlite3_column_text(pragma.get(), 0));
      mode_name = mode != nullptr ? mode : "";
      break;
    }
    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (rc != SQLITE_ROW) return sqlite_error(db, rc, "enable WAL on " + path);
  if (mode_name != "wal") {
    return unavailable("could not switch " + path + " to WAL journal mode (still '" + mode_name + "')");
  }

  rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", nullptr, nullptr,
                    nullptr);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, "configure " + path);
  return ok_status();
}

Result<std::unique_ptr<Connection>> Connection::open(const std::string& path, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  DbHandle db(raw);  // sqlite may hand back a handle even on failure; it must still be closed
  if (rc != SQLITE_OK) {
    const int code = db ? sqlite3_extended_errcode(db.get()) : rc;
    return sqlite_error(db.get(), code, "cannot open sqlite database " + path);
  }
  if (auto configured = configure(db.get(), path, busy_timeout_ms); !configured) {
    return configured.error();
  }
  return std::unique_ptr<Connection>(new Connection(std::move(db)));
}

// Holds a transaction open for a scope; rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& conn) : conn_(conn) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) sqlite3_exec(conn_.db(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

  Status begin(const char* sql) {
    auto status = conn_.run_script(sql, "begin transaction");
    open_ = status.ok();
    return status;
  }
  Status commit() {
    auto status = conn_.run_script("COMMIT", "commit transaction");
    if (status.ok()) open_ = false;
    return status;
  }

 private:
  Connection& conn_;
  bool open_ = false;
};

// ---------------------------------------------------------------------------------------------
// Connection pool

class ConnectionPool {
 public:
  // Returns the connection to the pool when it goes out of scope.
  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (conn_) pool_->give_back(std::move(conn_));
    }
    Connection& operator*() const { return *conn_; }

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  ConnectionPool(std::vector<std::unique_ptr<Connection>> connections, std::chrono::milliseconds max_wait)
      : idle_(std::move(connections)), size_(idle_.size()), max_wait_(max_wait) {}

  // Waits up to max_wait for a free connection (the same patience as for SQLite's own locks).
  Result<Lease> acquire() {
    std::unique_lock lock(mu_);
    if (!available_.wait_for(lock, max_wait_, [&] { return !idle_.empty(); })) {
      return unavailable("all " + std::to_string(size_) + " sqlite connections stayed busy for " +
                         std::to_string(max_wait_.count()) + " ms");
    }
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(conn));
  }

 private:
  void give_back(std::unique_ptr<Connection> conn) noexcept {
    {
      std::lock_guard lock(mu_);
      idle_.push_back(std::move(conn));  // capacity is size_ from construction: cannot throw
    }
    available_.notify_one();
  }

  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> idle_;
  size_t size_;
  std::chrono::milliseconds max_wait_;
};

// ---------------------------------------------------------------------------------------------
// Migrations

Result<int> read_user_version(Connection& conn) {
  auto stmt = conn.statement(kUserVersion);
  if (!stmt) return stmt.error();
  const int rc = stmt.value().step();
  if (rc != SQLITE_ROW) return sqlite_error(conn.db(), rc, "read schema version");
  return sqlite3_column_int(stmt.value().get(), 0);
}

Status require_known_version(int version) {
  if (version <= kSchemaVersion) return ok_status();
  return unavailable("database schema version " + std::to_string(version) +
                     " is newer than this build supports (" + std::to_string(kSchemaVersion) + ")");
}

// Brings the schema to kSchemaVersion. The re-check under BEGIN IMMEDIATE makes concurrent
// starters (several processes opening a fresh file at once) apply each step exactly once.
Status migrate(Connection& conn) {
  auto current = read_user_version(conn);
  if (!current) return current.error();
  if (auto known = require_known_version(current.value()); !known) return known;
  if (current.value() == kSchemaVersion) return ok_status();  // common case: no write lock

  Transaction txn(conn);
  if (auto begun = txn.begin("BEGIN IMMEDIATE"); !begun) return begun;
  current = read_user_version(conn);
  if (!current) return current.error();
  if (auto known = require_known_version(current.value()); !known) return known;
  for (int version = current.value(); version < kSchemaVersion; ++version) {
    const std::string step = std::to_string(version + 1);
    if (auto applied = conn.run_script(kMigrations[version], "apply schema migration " + step); !applied) {
      return applied;
    }
    if (auto bumped = conn.run_script("PRAGMA user_version = " + step, "record schema version " + step);
        !bumped) {
      return bumped;
    }
  }
  return txn.commit();
}

// ---------------------------------------------------------------------------------------------
// Row mapping and queries (each takes a leased connection)

std::string column_text(sqlite3_stmt* stmt, int col) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
  if (text == nullptr) return {};
  return std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, col)));
}

std::optional<std::string> column_optional_text(sqlite3_stmt* stmt, int col) {
  if (sqlite3_column_type(stmt, col) == SQLITE_NULL) return std::nullopt;
  return column_text(stmt, col);
}

Result<User> read_user(sqlite3_stmt* stmt) {
  User user;
  user.id = column_text(stmt, kColId);
  user.email = column_text(stmt, kColEmail);
  user.email_normalized = column_text(stmt, kColEmailNormalized);
  user.first_name = column_text(stmt, kColFirstName);
  user.last_name = column_text(stmt, kColLastName);
  user.phone = column_optional_text(stmt, kColPhone);
  user.country = column_optional_text(stmt, kColCountry);
  user.state = column_optional_text(stmt, kColState);
  const std::string role = column_text(stmt, kColRole);
  const auto parsed = parse_role(role);
  if (!parsed) return unavailable("user " + user.id + " has unknown stored role '" + role + "'");
  user.role = *parsed;
  user.password_hash = column_text(stmt, kColPasswordHash);
  user.created_at_ms = sqlite3_column_int64(stmt, kColCreatedAt);
  user.updated_at_ms = sqlite3_column_int64(stmt, kColUpdatedAt);
  user.user_name = column_optional_text(stmt, kColUserName);
  user.version = sqlite3_column_int64(stmt, kColVersion);
  return user;
}

// Steps a bound statement to completion, collecting every row as a User.
Result<std::vector<User>> read_users(Statement& stmt, std::string_view what) {
  if (stmt.bind_status() != SQLITE_OK) return sqlite_error(stmt.db(), stmt.bind_status(), what);
  std::vector<User> users;
  int rc;
  while ((rc = stmt.step()) == SQLITE_ROW) {
    auto user = read_user(stmt.get());
    if (!user) return user.error();
    users.push_back(std::move(user).value());
  }
  if (rc != SQLITE_DONE) return sqlite_error(stmt.db(), rc, what);
  return users;
}

// Runs a single-row, single-integer query bound to one text key (EXISTS / count).
Result<int64_t> query_int(Connection& conn, const char* sql, std::optional<std::string_view> key,
                          std::string_view what) {
  auto stmt = conn.statement(sql);
  if (!stmt) return stmt.error();
  if (key) stmt.value().bind_text(*key);
  if (const int bound = stmt.value().bind_status(); bound != SQLITE_OK) {
    return sqlite_error(conn.db(), bound, what);
  }
  const int rc = stmt.value().step();
  if (rc != SQLITE_ROW) return sqlite_error(conn.db(), rc, what);
  return sqlite3_column_int64(stmt.value().get(), 0);
}

// Runs a bound write statement and returns how many rows it changed.
Result<int64_t> execute_write(Statement& stmt, std::string_view what) {
  if (stmt.bind_status() != SQLITE_OK) return sqlite_error(stmt.db(), stmt.bind_status(), what);
  const int rc = stmt.step();
  if (rc != SQLITE_DONE) return sqlite_error(stmt.db(), rc, what);
  return static_cast<int64_t>(sqlite3_changes64(stmt.db()));
}

Result<User> find_one(Connection& conn, const char* sql, std::string_view key, std::string_view what) {
  auto stmt = conn.statement(sql);
  if (!stmt) return stmt.error();
  stmt.value().bind_text(key);
  auto rows = read_users(stmt.value(), what);
  if (!rows) return rows.error();
  if (rows.value().empty()) return Error{Errc::not_found, "user not found"};
  return std::move(rows.value().front());
}

// Binds the columns between id and version, in the order every write statement lists them.
Statement& bind_user_fields(Statement& stmt, const User& user) {
  return stmt.bind_text(user.email)
      .bind_text(user.email_normalized)
      .bind_text(user.first_name)
      .bind_text(user.last_name)
      .bind_optional(user.phone)
      .bind_optional(user.country)
      .bind_optional(user.state)
      .bind_text(role_name(user.role))
      .bind_text(user.password_hash)
      .bind_int(user.created_at_ms)
      .bind_int(user.updated_at_ms)
      .bind_optional(user.user_name);
}

// Binds every column of `user` to `sql` (kInsertUser or kPutUser) and runs it.
Result<User> write_user(Connection& conn, const char* sql, const User& user) {
  auto stmt = conn.statement(sql);
  if (!stmt) return stmt.error();
  bind_user_fields(stmt.value().bind_text(user.id), user).bind_int(user.version);
  auto changed = execute_write(stmt.value(), sql == kPutUser ? "put user" : "insert user");
  if (!changed) return changed.error();
  return user;
}

// After a guarded write touched no row: tells a missing user from a version mismatch.
Error explain_no_change(Connection& conn, std::string_view id, int64_t expected_version) {
  auto exists = query_int(conn, kUserExists, id, "look up user");
  if (!exists) return exists.error();
  if (exists.value() == 0) return {Errc::not_found, "user not found"};
  return {Errc::precondition_failed,
          "user was modified since version " + std::to_string(expected_version) + " was read"};
}

Result<User> update_user(Connection& conn, const User& user) {
  auto stmt = conn.statement(kUpdateUser);
  if (!stmt) return stmt.error();
  bind_user_fields(stmt.value(), user).bind_text(user.id).bind_int(user.version);
  auto changed = execute_write(stmt.value(), "update user");
  if (!changed) return changed.error();
  if (changed.value() == 0) return explain_no_change(conn, user.id, user.version);
  User updated = user;
  updated.version = user.version + 1;
  return updated;
}

Status delete_user(Connection& conn, std::string_view id, std::optional<int64_t> expected_version) {
  auto stmt = conn.statement(expected_version ? kDeleteUserAtVersion : kDeleteUser);
  if (!stmt) return stmt.error();
  stmt.value().bind_text(id);
  if (expected_version) stmt.value().bind_int(*expected_version);
  auto changed = execute_write(stmt.value(), "delete user");
  if (!changed) return changed.error();
  if (changed.value() > 0) return ok_status();
  if (!expected_version) return Error{Errc::not_found, "user not found"};
  return explain_no_change(conn, id, *expected_version);
}

Status validate_page(const PageRequest& page) {
  if (page.limit < 1) return Error{Errc::invalid, "page limit must be at least 1"};
  if (page.offset < 0) return Error{Errc::invalid, "page offset must not be negative"};
  if (page.after_id && page.before_id) return Error{Errc::invalid, "after_id and before_id are exclusive"};
  return ok_status();
}

// Fetches the page rows (limit + 1 of them, to learn whether more lie in the walking direction)
// and fills users plus the flag for that direction.
Status fetch_page(Connection& conn, const PageRequest& page, UserPage& out) {
  const int64_t fetch = int64_t{page.limit} + 1;
  const char* sql = page.after_id ? kListAfter : page.before_id ? kListBefore : kListOffset;
  auto stmt = conn.statement(sql);
  if (!stmt) return stmt.error();
  if (page.after_id) stmt.value().bind_text(*page.after_id).bind_int(fetch);
  else if (page.before_id) stmt.value().bind_text(*page.before_id).bind_int(fetch);
  else stmt.value().bind_int(fetch).bind_int(page.offset);
  auto rows = read_users(stmt.value(), "list users");
  if (!rows) return rows.error();

  out.users = std::move(rows).value();
  const bool more = static_cast<int64_t>(out.users.size()) > page.limit;
  if (more) out.users.resize(static_cast<size_t>(page.limit));
  if (page.before_id) {
    std::reverse(out.users.begin(), out.users.end());  // fetched descending, returned ascending
    out.has_more_before = more;
  } else {
    out.has_more_after = more;
  }
  return ok_status();
}

// Fills the flag opposite to the walking direction, which limit + 1 cannot tell.
Status fill_opposite_flag(Connection& conn, const PageRequest& page, UserPage& out) {
  if (page.after_id) {
    auto any = query_int(conn, kAnyIdAtOrBelow, *page.after_id, "list users");
    if (!any) return any.error();
    out.has_more_before = any.value() != 0;
  } else if (page.before_id) {
    auto any = query_int(conn, kAnyIdAtOrAbove, *page.before_id, "list users");
    if (!any) return any.error();
    out.has_more_after = any.value() != 0;
  } else {
    out.has_more_before = page.offset > 0 && out.total > 0;
  }
  return ok_status();
}

Result<UserPage> list_users(Connection& conn, const PageRequest& page) {
  if (auto valid = validate_page(page); !valid) return valid.error();
  // One read transaction so total, rows and flags come from the same snapshot. It only reads,
  // so the Transaction's closing ROLLBACK is as good as a COMMIT.
  Transaction snapshot(conn);
  if (auto begun = snapshot.begin("BEGIN"); !begun) return begun.error();

  UserPage out;
  auto total = query_int(conn, kCountUsers, std::nullopt, "count users");
  if (!total) return total.error();
  out.total = total.value();
  if (auto fetched = fetch_page(conn, page, out); !fetched) return fetched.error();
  if (auto flagged = fill_opposite_flag(conn, page, out); !flagged) return flagged.error();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files

struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
};

Result<FileIdentity> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return unavailable("cannot stat database file " + path + ": " + std::strerror(errno));
  }
  return FileIdentity{st.st_dev, st.st_ino};
}

Result<std::string> absolute_path(const std::string& path) {
  if (path.empty()) return unavailable("sqlite database path is empty");
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(path, ec);
  if (ec) return unavailable("cannot resolve sqlite path " + path + ": " + ec.message());
  return absolute.lexically_normal().string();
}

Status require_parent_directory(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (std::filesystem::is_directory(parent, ec)) return ok_status();
  if (std::filesystem::exists(parent, ec)) {
    return unavailable("cannot open sqlite database " + path + ": " + parent.string() +
                       " is not a directory");
  }
  return unavailable("cannot open sqlite database " + path + ": directory " + parent.string() +
                     " does not exist");
}

// ---------------------------------------------------------------------------------------------
// The store

class SqliteStore final : public UserStore {
 public:
  SqliteStore(std::string path, FileIdentity identity, std::vector<std::unique_ptr<Connection>> connections,
              std::chrono::milliseconds max_wait)
      : path_(std::move(path)), identity_(identity), pool_(std::move(connections), max_wait) {}

  Result<User> create(const User& user) override {
    return with_connection<User>("create user", [&](Connection& c) { return write_user(c, kInsertUser, user); });
  }
  Result<User> put(const User& user) override {
    return with_connection<User>("put user", [&](Connection& c) { return write_user(c, kPutUser, user); });
  }
  Result<User> find_by_id(std::string_view id) override {
    return with_connection<User>("find user by id", [&](Connection& c) {
      return find_one(c, kSelectById, id, "find user by id");
    });
  }
  Result<User> find_by_email(std::string_view email_normalized) override {
    return with_connection<User>("find user by email", [&](Connection& c) {
      return find_one(c, kSelectByEmail, email_normalized, "find user by email");
    });
  }
  Result<User> find_by_user_name(std::string_view user_name) override {
    return with_connection<User>("find user by userName", [&](Connection& c) {
      return find_one(c, kSelectByUserName, user_name, "find user by userName");
    });
  }
  Result<UserPage> list(const PageRequest& page) override {
    return with_connection<UserPage>("list users", [&](Connection& c) { return list_users(c, page); });
  }
  Result<User> update(const User& user) override {
    return with_connection<User>("update user", [&](Connection& c) { return update_user(c, user); });
  }
  Status remove(std::string_view id, std::optional<int64_t> expected_version) override {
    return with_connection<Unit>("delete user",
                                 [&](Connection& c) { return delete_user(c, id, expected_version); });
  }
  Status ping() override {
    // An open connection keeps reading a deleted or replaced file's old inode, so SQLite alone
    // would answer happily: check the path itself first.
    auto on_disk = check_file();
    if (!on_disk) return on_disk;
    return with_connection<Unit>("ping", [&](Connection& c) -> Status {
      auto answered = query_int(c, kPing, std::nullopt, "ping " + path_);
      if (!answered) return answered.error();
      return ok_status();
    });
  }
  std::string describe() const override { return "sqlite://" + path_; }

 private:
  Status check_file() const {
    try {
      auto identity = file_identity(path_);
      if (!identity) return identity.error();
      if (identity.value().device != identity_.device || identity.value().inode != identity_.inode) {
        return unavailable("database file " + path_ + " was replaced after it was opened");
      }
      if (::access(path_.c_str(), R_OK | W_OK) != 0) {
        return unavailable("database file " + path_ + " is not accessible: " + std::strerror(errno));
      }
      return ok_status();
    } catch (const std::exception& e) {
      return unavailable(std::string("ping: ") + e.what());
    }
  }

  // The exception boundary: leases a connection, runs body, and turns any throw into unavailable.
  template <class T, class Body>
  Result<T> with_connection(std::string_view what, Body&& body) {
    try {
      auto lease = pool_.acquire();
      if (!lease) return lease.error();
      return body(*lease.value());
    } catch (const std::exception& e) {
      return unavailable(std::string(what) + ": " + e.what());
    } catch (...) {
      return unavailable(std::string(what) + ": unknown exception");
    }
  }

  std::string path_;
  FileIdentity identity_;
  ConnectionPool pool_;
};

Result<std::unique_ptr<UserStore>> open_store(const SqliteOptions& options) {
  auto path = absolute_path(options.path);
  if (!path) return path.error();
  if (auto parent = require_parent_directory(path.value()); !parent) return parent.error();

  const int busy_timeout_ms = std::max(0, options.busy_timeout_ms);
  const int pool_size = std::max(1, options.pool_size);
  // Eager: every connection is opened now, so a lazily opened one can never silently create a
  // fresh, schema-less file after the real one disappeared.
  std::vector<std::unique_ptr<Connection>> connections;
  connections.reserve(static_cast<size_t>(pool_size));
  for (int i = 0; i < pool_size; ++i) {
    auto conn = Connection::open(path.value(), busy_timeout_ms);
    if (!conn) return conn.error();
    if (i == 0) {
      if (auto migrated = migrate(*conn.value()); !migrated) return migrated.error();
    }
    connections.push_back(std::move(conn).value());
  }

  auto identity = file_identity(path.value());
  if (!identity) return identity.error();
  return std::unique_ptr<UserStore>(std::make_unique<SqliteStore>(
      std::move(path).value(), identity.value(), std::move(connections),
      std::chrono::milliseconds(busy_timeout_ms)));
}

}  // namespace

Result<std::unique_ptr<UserStore>> open_sqlite_store(const SqliteOptions& options) {
  try {
    return open_store(options);
  } catch (const std::exception& e) {
    return unavailable("cannot open sqlite database " + options.path + ": " + e.what());
  } catch (...) {
    return unavailable("cannot open sqlite database " + options.path + ": unknown exception");
  }
}

}  // namespace usersd
