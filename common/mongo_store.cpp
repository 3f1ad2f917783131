// UserStore on MongoDB through mongo-c-driver: one client pool per store object (so per worker
// process: workers are exec'd, never share a pool across fork), one pooled client leased per operation.
// Documents are built field by field with typed bson_append_* calls from the User struct, never parsed
// from request JSON, so a client-supplied string can never become a query operator.
#include "common/mongo_store.hpp"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/ids.hpp"
#include "common/user_input.hpp"

namespace usersd {
namespace {

constexpr const char* kDefaultDatabase = "usersd";
constexpr const char* kCollection = "users";
constexpr const char* kEmailIndex = "emailNormalized_unique";
// Sparse, so only users that have a userName are constrained. FerretDB 1.24 accepts and ignores
// "sparse" (and refuses partialFilterExpression), but its SQLite backend indexes a missing field as NULL,
// which a unique index does not compare: the same effect. The store contract suite checks it on both.
constexpr const char* kUserNameIndex = "userNameNormalized_unique";

// Field names of the stored document.
constexpr const char* kFieldId = "_id";
constexpr const char* kFieldEmail = "email";
constexpr const char* kFieldEmailNormalized = "emailNormalized";
constexpr const char* kFieldFirstName = "firstName";
constexpr const char* kFieldLastName = "lastName";
constexpr const char* kFieldPhone = "phone";
constexpr const char* kFieldCountry = "country";
constexpr const char* kFieldState = "state";
constexpr const char* kFieldUserName = "userName";
constexpr const char* kFieldUserNameNormalized = "userNameNormalized";  // ASCII lowercase of userName
constexpr const char* kFieldRole = "role";
constexpr const char* kFieldPasswordHash = "passwordHash";
constexpr const char* kFieldCreatedAt = "createdAt";
constexpr const char* kFieldUpdatedAt = "updatedAt";
constexpr const char* kFieldVersion = "version";

Error unavailable(std::string message) { return {Errc::unavailable, std::move(message)}; }
Error not_found() { return {Errc::not_found, "user not found"}; }

// ---------------------------------------------------------------------------------------------
// Driver lifetime

// The driver logs (from its monitoring threads too) through a process-wide handler; by default it
// prints every level, including a debug line per failed heartbeat, straight to stderr. Route it into
// the process's spdlog logger at the matching level instead, so log.level and log.file apply.
void log_to_spdlog(mongoc_log_level_t level, const char* domain, const char* message, void*) noexcept {
  spdlog::level::level_enum mapped = spdlog::level::debug;
  switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL: mapped = spdlog::level::err; break;
    case MONGOC_LOG_LEVEL_WARNING: mapped = spdlog::level::warn; break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO: mapped = spdlog::level::info; break;
    case MONGOC_LOG_LEVEL_DEBUG: mapped = spdlog::level::debug; break;
    case MONGOC_LOG_LEVEL_TRACE: mapped = spdlog::level::trace; break;
  }
  try {  // called from C: nothing may propagate
    spdlog::log(mapped, "mongoc {}: {}", domain != nullptr ? domain : "", message != nullptr ? message : "");
  } catch (...) {
  }
}

// mongoc_init sets up process-wide state (TLS, SASL, the handshake metadata) and must run once
// before any other driver call. mongoc_cleanup is never called: stores may be opened and closed
// at any time while the process runs, and the OS reclaims everything at exit.
void init_driver() {
  static std::once_flag once;
  std::call_once(once, [] {
    mongoc_log_set_handler(log_to_spdlog, nullptr);
    mongoc_init();
  });
}

}  // namespace

void init_mongo_driver() { init_driver(); }

namespace {

// ---------------------------------------------------------------------------------------------
// RAII handles

// A bson_t owned by this scope. It starts as an empty document, so it is always safe to destroy,
// even when the driver call meant to fill it never ran. Driver "reply" out-parameters re-initialize
// it, which leaks nothing: an empty inline bson_t owns no heap memory.
class Bson {
 public:
  Bson() { bson_init(&doc_); }
  ~Bson() { bson_destroy(&doc_); }
  Bson(const Bson&) = delete;
  Bson& operator=(const Bson&) = delete;

  bson_t* get() { return &doc_; }
  const bson_t* get() const { return &doc_; }

 private:
  bson_t doc_;
};

struct UriDeleter {
  void operator()(mongoc_uri_t* uri) const noexcept { mongoc_uri_destroy(uri); }
};
using UriHandle = std::unique_ptr<mongoc_uri_t, UriDeleter>;

// Destroying the pool stops its monitoring threads and closes every connection; every leased
// client must have been pushed back first (leases live only inside one store call).
struct PoolDeleter {
  void operator()(mongoc_client_pool_t* pool) const noexcept { mongoc_client_pool_destroy(pool); }
};
using PoolHandle = std::unique_ptr<mongoc_client_pool_t, PoolDeleter>;

struct CollectionDeleter {
  void operator()(mongoc_collection_t* collection) const noexcept { mongoc_collection_destroy(collection); }
};
using CollectionHandle = std::unique_ptr<mongoc_collection_t, CollectionDeleter>;

struct CursorDeleter {
  void operator()(mongoc_cursor_t* cursor) const noexcept { mongoc_cursor_destroy(cursor); }
};
using CursorHandle = std::unique_ptr<mongoc_cursor_t, CursorDeleter>;

// A client borrowed from the pool for one store operation; pushed back at scope exit. A pooled
// client is not thread-safe, so it must never outlive the call that leased it.
class ClientLease {
 public:
  explicit ClientLease(mongoc_client_pool_t* pool) : pool_(pool), client_(mongoc_client_pool_pop(pool)) {}
  ~ClientLease() {
    if (client_ != nullptr) mongoc_client_pool_push(pool_, client_);
  }
  ClientLease(const ClientLease&) = delete;
  ClientLease& operator=(const ClientLease&) = delete;

  mongoc_client_t* get() const { return client_; }

 private:
  mongoc_client_pool_t* pool_;
  mongoc_client_t* client_;
};

// The users collection on a leased client. Members are destroyed in reverse order, so the
// collection (which borrows the client) goes before the client returns to the pool.
class Session {
 public:
  Session(mongoc_client_pool_t* pool, const std::string& database)
      : lease_(pool),
        collection_(lease_.get() != nullptr
                        ? mongoc_client_get_collection(lease_.get(), database.c_str(), kCollection)
                        : nullptr) {}

  bool ok() const { return collection_ != nullptr; }
  mongoc_client_t* client() const { return lease_.get(); }
  mongoc_collection_t* users() const { return collection_.get(); }

 private:
  ClientLease lease_;
  CollectionHandle collection_;
};

// ---------------------------------------------------------------------------------------------
// Secrets in messages

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The password as written in the URL (percent-encoded) and decoded, found the same way
// redact_url finds it. Driver messages are scrubbed of both before they leave this file: the
// driver does not promise to keep the password out of its error strings.
std::vector<std::string> url_passwords(const std::string& url) {
  std::vector<std::string> secrets;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return secrets;
  const auto authority_start = scheme_end + 3;
  const auto authority_end = url.find_first_of("/?#", authority_start);
  const auto at = url.rfind('@', authority_end == std::string::npos ? std::string::npos : authority_end);
  if (at == std::string::npos || at < authority_start) return secrets;
  const auto colon = url.find(':', authority_start);
  if (colon == std::string::npos || colon > at) return secrets;
  std::string raw = url.substr(colon + 1, at - colon - 1);
  if (raw.empty()) return secrets;
  std::string decoded = percent_decode(raw);
  if (decoded != raw && !decoded.empty()) secrets.push_back(std::move(decoded));
  secrets.push_back(std::move(raw));
  return secrets;
}

std::string scrub(std::string message, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = message.find(secret); pos != std::string::npos; pos = message.find(secret, pos + 4)) {
      message.replace(pos, secret.size(), "****");
    }
  }
  return message;
}

// ---------------------------------------------------------------------------------------------
// Errors

// 11000 is the server's duplicate key error; 11001 (old servers' updates) and 12582 (old mongos)
// mean the same thing.
bool is_duplicate_key_code(int64_t code) { return code == 11000 || code == 11001 || code == 12582; }

bool holds_duplicate_key_code(const bson_iter_t* it) {
  return BSON_ITER_HOLDS_NUMBER(it) && is_duplicate_key_code(bson_iter_as_int64(it));
}

// A duplicate key shows up in the bson_error_t (domain SERVER with error API 2, COLLECTION or
// WRITE_CONCERN otherwise) and, depending on the command and server, in the reply's "code",
// "writeErrors.N.code" or "writeConcernError.code". Any of them counts.
bool is_duplicate_key(const bson_error_t& error, const bson_t* reply) {
  switch (error.domain) {
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_COLLECTION:
    case MONGOC_ERROR_WRITE_CONCERN:
    case MONGOC_ERROR_COMMAND:
    case MONGOC_ERROR_QUERY:
      if (is_duplicate_key_code(error.code)) return true;
      break;
    default:
      break;
  }
  if (reply == nullptr || reply->len <= 5) return false;
  bson_iter_t it;
  if (bson_iter_init_find(&it, reply, "code") && holds_duplicate_key_code(&it)) return true;
  bson_iter_t child;
  if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "writeConcernError.code", &child) &&
      holds_duplicate_key_code(&child)) {
    return true;
  }
  if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
      bson_iter_recurse(&it, &child)) {
    while (bson_iter_next(&child)) {
      bson_iter_t code;
      if (BSON_ITER_HOLDS_DOCUMENT(&child) && bson_iter_recurse(&child, &code) &&
          bson_iter_find(&code, "code") && holds_duplicate_key_code(&code)) {
        return true;
      }
    }
  }
  return false;
}

// Which unique index a duplicate key error names. MongoDB says "index: _id_ dup key: ..." or
// "index: emailNormalized_unique dup key: ..."; FerretDB names no index, so callers that can
// tell the two apart another way (create: does the id exist?) get `unnamed`.
enum class DuplicateOf { email, user_name, id, unnamed };

DuplicateOf duplicate_of(const bson_error_t& error) {
  const std::string_view message = error.message;
  if (message.find(kEmailIndex) != std::string_view::npos) return DuplicateOf::email;
  if (message.find(kUserNameIndex) != std::string_view::npos) return DuplicateOf::user_name;
  if (message.find("index: _id_") != std::string_view::npos) return DuplicateOf::id;
  return DuplicateOf::unnamed;
}

Error email_taken() { return {Errc::conflict, kEmailTakenMessage}; }
Error user_name_taken() { return {Errc::conflict, kUserNameTakenMessage}; }
Error id_taken() { return {Errc::conflict, "user id already exists"}; }

// The store's error for a failed driver call. Only a duplicate key is a conflict (reported as the
// email, the one unique field besides _id; create refines it). Everything else (server selection,
// network, timeouts, auth, other server errors) is unavailable: the request may succeed later, and
// the worker keeps serving. The duplicate key message is dropped on purpose: it echoes the email.
Error driver_error(std::string_view what, const bson_error_t& error, const bson_t* reply,
                   const std::vector<std::string>& secrets) {
  if (is_duplicate_key(error, reply)) {
    switch (duplicate_of(error)) {
      case DuplicateOf::id: return id_taken();
      case DuplicateOf::user_name: return user_name_taken();
      default: return email_taken();
    }
  }
  return unavailable(scrub(std::string(what) + ": " + error.message + " (domain " +
                               std::to_string(error.domain) + ", code " + std::to_string(error.code) + ")",
                           secrets));
}

// Errors the server itself sent back (as opposed to not reaching it).
bool is_server_reply(const bson_error_t& error) {
  return error.domain == MONGOC_ERROR_SERVER || error.domain == MONGOC_ERROR_COLLECTION ||
         error.domain == MONGOC_ERROR_QUERY || error.domain == MONGOC_ERROR_COMMAND ||
         error.domain == MONGOC_ERROR_WRITE_CONCERN;
}

// ---------------------------------------------------------------------------------------------
// Documents

// Every append goes through these so one failure (a value too large for BSON) is caught once.
class Builder {
 public:
  explicit Builder(bson_t* doc) : doc_(doc) {}

  Builder& str(const char* key, const std::string& value) {
    // std::string::data() is never null; bson_append_utf8 would append a BSON null for a null pointer.
    if (value.size() > static_cast<size_t>(INT_MAX)) ok_ = false;
    else record(bson_append_utf8(doc_, key, -1, value.data(), static_cast<int>(value.size())));
    return *this;
  }
  Builder& oid(const char* key, const bson_oid_t& value) { return record(bson_append_oid(doc_, key, -1, &value)); }
  Builder& date(const char* key, int64_t ms) { return record(bson_append_date_time(doc_, key, -1, ms)); }
  Builder& int64(const char* key, int64_t value) { return record(bson_append_int64(doc_, key, -1, value)); }
  Builder& int32(const char* key, int32_t value) { return record(bson_append_int32(doc_, key, -1, value)); }
  Builder& boolean(const char* key, bool value) { return record(bson_append_bool(doc_, key, -1, value)); }
  bool ok() const { return ok_; }

 private:
  Builder& record(bool appended) {
    ok_ = ok_ && appended;
    return *this;
  }
  bson_t* doc_;
  bool ok_ = true;
};

Error too_large(std::string_view what) { return {Errc::invalid, std::string(what) + ": document too large"}; }

// Ids are 24 lowercase hex digits (what new_object_id makes and the API accepts). Anything else
// cannot name a stored user, so callers answer not_found without building a query from it.
std::optional<bson_oid_t> parse_id(std::string_view id) {
  if (!is_object_id(id)) return std::nullopt;
  const std::string text(id);
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, text.c_str());
  return oid;
}

// The fields written by both create ($set of an update writes the same ones). Absent optionals
// are left out rather than stored as null, so "absent" has one representation.
void append_user_fields(Builder& b, const User& user) {
  b.str(kFieldEmail, user.email)
      .str(kFieldEmailNormalized, user.email_normalized)
      .str(kFieldFirstName, user.first_name)
      .str(kFieldLastName, user.last_name);
  if (user.phone) b.str(kFieldPhone, *user.phone);
  if (user.country) b.str(kFieldCountry, *user.country);
  if (user.state) b.str(kFieldState, *user.state);
  if (user.user_name) b.str(kFieldUserName, *user.user_name).str(kFieldUserNameNormalized, normalize_user_name(*user.user_name));
  b.str(kFieldRole, role_name(user.role))
      .str(kFieldPasswordHash, user.password_hash)
      .date(kFieldCreatedAt, user.created_at_ms)
      .date(kFieldUpdatedAt, user.updated_at_ms);
}

std::optional<std::string> read_utf8(const bson_iter_t* it) {
  if (!BSON_ITER_HOLDS_UTF8(it)) return std::nullopt;
  uint32_t length = 0;
  const char* text = bson_iter_utf8(it, &length);
  return std::string(text, length);
}

// Decodes a stored document strictly: a missing or mistyped required field means the data was not
// written by this code, which is an operational problem (unavailable), not a missing user.
Result<User> decode_user(const bson_t* doc) {
  User user;
  bool has_id = false, has_email = false, has_email_normalized = false, has_first = false, has_last = false,
       has_role = false, has_hash = false, has_created = false, has_updated = false, has_version = false;
  std::string bad_field;
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return unavailable("stored user document is corrupt");
  while (bson_iter_next(&it)) {
    const std::string_view key(bson_iter_key(&it), bson_iter_key_len(&it));
    auto text_into = [&](std::string& out, bool& seen) {
      if (auto value = read_utf8(&it)) {
        out = std::move(*value);
        seen = true;
      } else {
        bad_field = key;
      }
    };
    auto optional_into = [&](std::optional<std::string>& out) {
      if (BSON_ITER_HOLDS_NULL(&it)) out.reset();  // tolerated: null means absent too
      else if (auto value = read_utf8(&it)) out = std::move(*value);
      else bad_field = key;
    };
    if (key == kFieldId) {
      if (BSON_ITER_HOLDS_OID(&it)) {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&it), hex);
        user.id = hex;
        has_id = true;
      } else {
        bad_field = key;
      }
    } else if (key == kFieldEmail) {
      text_into(user.email, has_email);
    } else if (key == kFieldEmailNormalized) {
      text_into(user.email_normalized, has_email_normalized);
    } else if (key == kFieldFirstName) {
      text_into(user.first_name, has_first);
    } else if (key == kFieldLastName) {
      text_into(user.last_name, has_last);
    } else if (key == kFieldPhone) {
      optional_into(user.phone);
    } else if (key == kFieldCountry) {
      optional_into(user.country);
    } else if (key == kFieldState) {
      optional_into(user.state);
    } else if (key == kFieldUserName) {
      optional_into(user.user_name);
    } else if (key == kFieldRole) {
      std::string role;
      text_into(role, has_role);
      if (has_role) {
        const auto parsed = parse_role(role);
        if (!parsed) return unavailable("user " + user.id + " has unknown stored role '" + role + "'");
        user.role = *parsed;
      }
    } else if (key == kFieldPasswordHash) {
      text_into(user.password_hash, has_hash);
    } else if (key == kFieldCreatedAt || key == kFieldUpdatedAt) {
      if (BSON_ITER_HOLDS_DATE_TIME(&it)) {
        (key == kFieldCreatedAt ? user.created_at_ms : user.updated_at_ms) = bson_iter_date_time(&it);
        (key == kFieldCreatedAt ? has_created : has_updated) = true;
      } else {
        bad_field = key;
      }
    } else if (key == kFieldVersion) {
      // $inc keeps int64, but a hand-edited document may hold an int32: both are exact.
      if (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)) {
        user.version = bson_iter_as_int64(&it);
        has_version = true;
      } else {
        bad_field = key;
      }
    }
    // Unknown fields are ignored: a newer build may have added some.
    if (!bad_field.empty()) break;
  }
  if (bad_field.empty()) {
    const std::pair<bool, const char*> required[] = {
        {has_id, kFieldId},           {has_email, kFieldEmail},         {has_email_normalized, kFieldEmailNormalized},
        {has_first, kFieldFirstName}, {has_last, kFieldLastName},       {has_role, kFieldRole},
        {has_hash, kFieldPasswordHash}, {has_created, kFieldCreatedAt}, {has_updated, kFieldUpdatedAt},
        {has_version, kFieldVersion}};
    for (const auto& [present, name] : required) {
      if (!present) {
        bad_field = name;
        break;
      }
    }
  }
  if (!bad_field.empty()) {
    return unavailable("stored user " + (user.id.empty() ? std::string("(no id)") : user.id) +
                       " has a missing or mistyped field '" + bad_field + "'");
  }
  return user;
}

// ---------------------------------------------------------------------------------------------
// The store

class MongoStore final : public UserStore {
 public:
  MongoStore(PoolHandle pool, std::string database, std::string described, std::vector<std::string> secrets)
      : pool_(std::move(pool)),
        database_(std::move(database)),
        described_(std::move(described)),
        secrets_(std::move(secrets)) {}

  Result<User> create(const User& user) override {
    return guarded<User>("create user", [&]() -> Result<User> {
      // An id that is not ObjectId-shaped cannot be stored as _id; the caller always makes real ones.
      const auto oid = parse_id(user.id);
      if (!oid) return Error{Errc::invalid, "create user: id is not 24 lowercase hex digits"};
      Bson doc;
      Builder b(doc.get());
      b.oid(kFieldId, *oid);
      append_user_fields(b, user);
      b.int64(kFieldVersion, user.version);
      if (!b.ok()) return too_large("create user");

      auto session = open_session("create user");
      if (!session) return session.error();
      Bson reply;
      bson_error_t error;
      if (!mongoc_collection_insert_one(session.value()->users(), doc.get(), nullptr, reply.get(), &error)) {
        if (is_duplicate_key(error, reply.get()) && duplicate_of(error) == DuplicateOf::unnamed) {
          // The server did not say which index: if the id is taken, it was the id.
          Bson by_id;
          if (!Builder(by_id.get()).oid(kFieldId, *oid).ok()) return too_large("create user");
          auto taken = exists(session.value()->users(), by_id.get(), "create user");
          if (!taken) return taken.error();
          if (taken.value()) return id_taken();
          return clash_with_another_user(session.value()->users(), user).value_or(email_taken());
        }
        return fail("create user", error, reply.get());
      }
      return user;
    });
  }

  Result<User> put(const User& user) override {
    return guarded<User>("put user", [&]() -> Result<User> {
      const auto oid = parse_id(user.id);
      if (!oid) return Error{Errc::invalid, "put user: id is not 24 lowercase hex digits"};
      Bson filter, doc, opts;
      if (!Builder(filter.get()).oid(kFieldId, *oid).ok()) return too_large("put user");
      Builder b(doc.get());
      b.oid(kFieldId, *oid);
      append_user_fields(b, user);
      b.int64(kFieldVersion, user.version);
      if (!b.ok() || !bson_append_bool(opts.get(), "upsert", -1, true)) return too_large("put user");

      auto session = open_session("put user");
      if (!session) return session.error();
      Bson reply;
      bson_error_t error;
      if (!mongoc_collection_replace_one(session.value()->users(), filter.get(), doc.get(), opts.get(), reply.get(),
                                         &error)) {
        // As in update: only the email or the userName can clash (the _id is the filter).
        if (auto conflict = explain_write_error(session.value()->users(), user, error, reply.get())) return *conflict;
        return fail("put user", error, reply.get());
      }
      return user;
    });
  }

  Result<User> find_by_id(std::string_view id) override {
    return guarded<User>("find user by id", [&]() -> Result<User> {
      const auto oid = parse_id(id);
      if (!oid) return not_found();
      Bson filter;
      if (!Builder(filter.get()).oid(kFieldId, *oid).ok()) return too_large("find user by id");
      auto session = open_session("find user by id");
      if (!session) return session.error();
      return find_one(session.value()->users(), filter.get(), "find user by id");
    });
  }

  Result<User> find_by_email(std::string_view email_normalized) override {
    return guarded<User>("find user by email",
                         [&]() -> Result<User> {
                           auto session = open_session("find user by email");
                           if (!session) return session.error();
                           return find_one_by_email(session.value()->users(), email_normalized, "find user by email");
                         });
  }

  Result<User> find_by_user_name(std::string_view user_name) override {
    return guarded<User>("find user by userName", [&]() -> Result<User> {
      Bson filter;
      if (!Builder(filter.get()).str(kFieldUserNameNormalized, normalize_user_name(user_name)).ok()) {
        return too_large("find user by userName");
      }
      auto session = open_session("find user by userName");
      if (!session) return session.error();
      return find_one(session.value()->users(), filter.get(), "find user by userName");
    });
  }

  Result<UserPage> list(const PageRequest& page) override {
    return guarded<UserPage>("list users", [&]() { return list_users(page); });
  }

  Result<User> update(const User& user) override {
    return guarded<User>("update user", [&]() -> Result<User> { return update_user(user); });
  }

  Status remove(std::string_view id, std::optional<int64_t> expected_version) override {
    return guarded<Unit>("delete user", [&]() -> Status { return delete_user(id, expected_version); });
  }

  Status ping() override {
    return guarded<Unit>("ping", [&]() -> Status {
      ClientLease lease(pool_.get());
      if (lease.get() == nullptr) return unavailable("ping: no client available from the pool");
      Bson command;
      if (!Builder(command.get()).int32("ping", 1).ok()) return too_large("ping");
      Bson reply;
      bson_error_t error;
      // Server selection bounds this: an unreachable server fails within serverSelectionTimeoutMS.
      if (!mongoc_client_command_simple(lease.get(), "admin", command.get(), nullptr, reply.get(), &error)) {
        return fail("ping", error, reply.get());
      }
      return ok_status();
    });
  }

  std::string describe() const override { return described_; }

  // Creates the unique indexes (email; userName, sparse); run once at open. createIndexes is idempotent
  // when an index with the same name and spec exists, and creates the collection if needed. One command
  // per index: FerretDB 1.24 panics on a createIndexes listing two indexes that both exist already.
  Status ensure_indexes() {
    if (auto email = ensure_index(kEmailIndex, kFieldEmailNormalized, /*sparse=*/false); !email) return email;
    return ensure_index(kUserNameIndex, kFieldUserNameNormalized, /*sparse=*/true);
  }

  Status ensure_index(const char* name, const char* field, bool sparse) {
    auto session = open_session("create indexes");
    if (!session) return session.error();
    Bson command;
    Builder b(command.get());
    b.str("createIndexes", kCollection);
    bson_t indexes, index, key;
    bool built = bson_append_array_begin(command.get(), "indexes", -1, &indexes);
    built = built && bson_append_document_begin(&indexes, "0", -1, &index);
    built = built && bson_append_document_begin(&index, "key", -1, &key);
    built = built && bson_append_int32(&key, field, -1, 1);
    built = built && bson_append_document_end(&index, &key);
    built = built && bson_append_utf8(&index, "name", -1, name, -1);
    built = built && bson_append_bool(&index, "unique", -1, true);
    if (sparse) built = built && bson_append_bool(&index, "sparse", -1, true);
    built = built && bson_append_document_end(&indexes, &index);
    built = built && bson_append_array_end(command.get(), &indexes);
    if (!built || !b.ok()) return too_large("create indexes");

    Bson reply;
    bson_error_t error;
    // write_command applies the URL's write concern (the index must be durable like the data).
    if (!mongoc_client_write_command_with_opts(session.value()->client(), database_.c_str(), command.get(),
                                               nullptr, reply.get(), &error)) {
      return fail("create index " + std::string(name) + " on " + database_ + "." + kCollection, error, reply.get());
    }
    return ok_status();
  }

 private:
  Error fail(std::string_view what, const bson_error_t& error, const bson_t* reply) const {
    return driver_error(what, error, reply, secrets_);
  }

  // Each store call opens exactly one session and hands its collection to the helpers below: a
  // thread holding one pooled client while popping a second could deadlock once every thread
  // of a full pool did the same.
  Result<std::unique_ptr<Session>> open_session(std::string_view what) {
    auto session = std::make_unique<Session>(pool_.get(), database_);
    if (!session->ok()) return unavailable(std::string(what) + ": no client available from the pool");
    return session;
  }

  // Runs a find and decodes every document it returns.
  Result<std::vector<User>> find_users(mongoc_collection_t* users_collection, const bson_t* filter,
                                       const bson_t* opts, std::string_view what) {
    CursorHandle cursor(mongoc_collection_find_with_opts(users_collection, filter, opts, nullptr));
    if (!cursor) return unavailable(std::string(what) + ": the driver returned no cursor");
    std::vector<User> users;
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor.get(), &doc)) {
      auto user = decode_user(doc);
      if (!user) return user.error();
      users.push_back(std::move(user).value());
    }
    bson_error_t error;
    const bson_t* reply = nullptr;
    if (mongoc_cursor_error_document(cursor.get(), &error, &reply)) return fail(what, error, reply);
    return users;
  }

  Result<User> find_one(mongoc_collection_t* users_collection, const bson_t* filter, std::string_view what) {
    Bson opts;
    if (!Builder(opts.get()).int64("limit", 1).ok()) return too_large(what);
    auto users = find_users(users_collection, filter, opts.get(), what);
    if (!users) return users.error();
    if (users.value().empty()) return not_found();
    return std::move(users.value().front());
  }

  Result<User> find_one_by_email(mongoc_collection_t* users_collection, std::string_view email_normalized,
                                 std::string_view what) {
    // Appended as a BSON string: whatever it contains ("{\"$ne\": \"\"}" included) is compared
    // as a value, never interpreted as an operator.
    Bson filter;
    if (!Builder(filter.get()).str(kFieldEmailNormalized, std::string(email_normalized)).ok()) {
      return too_large(what);
    }
    return find_one(users_collection, filter.get(), what);
  }

  // Which other user holds user's email or userName, if one does (for servers that do not name the index).
  std::optional<Error> clash_with_another_user(mongoc_collection_t* users_collection, const User& user) {
    auto email_owner = find_one_by_email(users_collection, user.email_normalized, "look up email owner");
    if (email_owner.ok() && email_owner.value().id != user.id) return email_taken();
    if (user.user_name) {
      Bson filter;
      if (Builder(filter.get()).str(kFieldUserNameNormalized, normalize_user_name(*user.user_name)).ok()) {
        auto name_owner = find_one(users_collection, filter.get(), "look up userName owner");
        if (name_owner.ok() && name_owner.value().id != user.id) return user_name_taken();
      }
    }
    return std::nullopt;
  }

  // The conflict a failed update/replace of `user` ran into, if it was one. Some MongoDB-compatible servers
  // (FerretDB 1.x) report a unique index violation by an update as a generic error instead of 11000, and
  // name no index: asking who owns the email and the userName works everywhere.
  std::optional<Error> explain_write_error(mongoc_collection_t* users_collection, const User& user,
                                           const bson_error_t& error, const bson_t* reply) {
    const bool duplicate = is_duplicate_key(error, reply);
    if (duplicate && duplicate_of(error) == DuplicateOf::email) return email_taken();
    if (duplicate && duplicate_of(error) == DuplicateOf::user_name) return user_name_taken();
    if (!duplicate && !is_server_reply(error)) return std::nullopt;
    if (auto clash = clash_with_another_user(users_collection, user)) return clash;
    if (duplicate) return email_taken();
    return std::nullopt;
  }

  // Whether any document matches (a limit-1 find returning only _id).
  Result<bool> exists(mongoc_collection_t* users_collection, const bson_t* filter, std::string_view what) {
    Bson opts;
    Builder b(opts.get());
    b.int64("limit", 1);
    bson_t projection;
    bool built = bson_append_document_begin(opts.get(), "projection", -1, &projection);
    built = built && bson_append_int32(&projection, kFieldId, -1, 1);
    built = built && bson_append_document_end(opts.get(), &projection);
    if (!built || !b.ok()) return too_large(what);
    CursorHandle cursor(mongoc_collection_find_with_opts(users_collection, filter, opts.get(), nullptr));
    if (!cursor) return unavailable(std::string(what) + ": the driver returned no cursor");
    const bson_t* doc = nullptr;
    if (mongoc_cursor_next(cursor.get(), &doc)) return true;
    bson_error_t error;
    const bson_t* reply = nullptr;
    if (mongoc_cursor_error_document(cursor.get(), &error, &reply)) return fail(what, error, reply);
    return false;
  }

  // After a guarded write matched nothing: tells a missing user from a version mismatch.
  Error explain_no_match(mongoc_collection_t* users_collection, const bson_oid_t& oid, int64_t expected_version) {
    Bson filter;
    if (!Builder(filter.get()).oid(kFieldId, oid).ok()) return too_large("look up user");
    auto found = exists(users_collection, filter.get(), "look up user");
    if (!found) return found.error();
    if (!found.value()) return not_found();
    return {Errc::precondition_failed,
            "user was modified since version " + std::to_string(expected_version) + " was read"};
  }

  Result<User> update_user(const User& user) {
    const auto oid = parse_id(user.id);
    if (!oid) return not_found();

    Bson filter;
    if (!Builder(filter.get()).oid(kFieldId, *oid).int64(kFieldVersion, user.version).ok()) {
      return too_large("update user");
    }
    // {$set: {every field}, $unset: {cleared optionals}, $inc: {version: 1}}. $unset is left out
    // when nothing is cleared: servers before 5.0 (and some compatible ones) reject an empty operator.
    Bson update;
    bson_t set, unset, inc;
    bool built = bson_append_document_begin(update.get(), "$set", -1, &set);
    Builder set_fields(&set);
    if (built) append_user_fields(set_fields, user);
    built = built && set_fields.ok() && bson_append_document_end(update.get(), &set);
    std::vector<const char*> cleared;
    if (!user.phone) cleared.push_back(kFieldPhone);
    if (!user.country) cleared.push_back(kFieldCountry);
    if (!user.state) cleared.push_back(kFieldState);
    if (!user.user_name) {
      cleared.push_back(kFieldUserName);
      cleared.push_back(kFieldUserNameNormalized);
    }
    if (built && !cleared.empty()) {
      built = bson_append_document_begin(update.get(), "$unset", -1, &unset);
      for (const char* field : cleared) built = built && bson_append_utf8(&unset, field, -1, "", 0);
      built = built && bson_append_document_end(update.get(), &unset);
    }
    built = built && bson_append_document_begin(update.get(), "$inc", -1, &inc);
    built = built && bson_append_int64(&inc, kFieldVersion, -1, 1);
    built = built && bson_append_document_end(update.get(), &inc);
    if (!built) return too_large("update user");

    auto session = open_session("update user");
    if (!session) return session.error();
    Bson reply;
    bson_error_t error;
    if (!mongoc_collection_update_one(session.value()->users(), filter.get(), update.get(), nullptr, reply.get(),
                                      &error)) {
      // _id is never changed, so only the email or the userName can clash.
      if (auto conflict = explain_write_error(session.value()->users(), user, error, reply.get())) return *conflict;
      return fail("update user", error, reply.get());
    }
    auto matched = reply_count(reply.get(), "matchedCount", "update user");
    if (!matched) return matched.error();
    if (matched.value() == 0) return explain_no_match(session.value()->users(), *oid, user.version);
    User updated = user;
    updated.version = user.version + 1;
    return updated;
  }

  Status delete_user(std::string_view id, std::optional<int64_t> expected_version) {
    const auto oid = parse_id(id);
    if (!oid) return not_found();
    Bson filter;
    Builder b(filter.get());
    b.oid(kFieldId, *oid);
    if (expected_version) b.int64(kFieldVersion, *expected_version);
    if (!b.ok()) return too_large("delete user");

    auto session = open_session("delete user");
    if (!session) return session.error();
    Bson reply;
    bson_error_t error;
    if (!mongoc_collection_delete_one(session.value()->users(), filter.get(), nullptr, reply.get(), &error)) {
      return fail("delete user", error, reply.get());
    }
    auto deleted = reply_count(reply.get(), "deletedCount", "delete user");
    if (!deleted) return deleted.error();
    if (deleted.value() > 0) return ok_status();
    if (!expected_version) return not_found();
    return explain_no_match(session.value()->users(), *oid, *expected_version);
  }

  // Reads matchedCount / deletedCount. Missing means the write was unacknowledged, which open refuses.
  static Result<int64_t> reply_count(const bson_t* reply, const char* field, std::string_view what) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, reply, field) || !BSON_ITER_HOLDS_NUMBER(&it)) {
      return unavailable(std::string(what) + ": the server's reply has no " + field);
    }
    return bson_iter_as_int64(&it);
  }

  static Status validate_page(const PageRequest& page) {
    if (page.limit < 1) return Error{Errc::invalid, "page limit must be at least 1"};
    if (page.offset < 0) return Error{Errc::invalid, "page offset must not be negative"};
    if (page.after_id && page.before_id) return Error{Errc::invalid, "after_id and before_id are exclusive"};
    return ok_status();
  }

  // {_id: {op: oid}}
  static bool append_id_range(bson_t* filter, const char* op, const bson_oid_t& oid) {
    bson_t range;
    bool built = bson_append_document_begin(filter, kFieldId, -1, &range);
    built = built && bson_append_oid(&range, op, -1, &oid);
    return built && bson_append_document_end(filter, &range);
  }

  // Same results and flags as the SQLite store. Without a transaction the count, the page and the
  // flags are separate reads, so a write landing between them can make them disagree by that write;
  // pages stay correct because the keyset is _id (ObjectId order is the hex order of our ids).
  Result<UserPage> list_users(const PageRequest& page) {
    if (auto valid = validate_page(page); !valid) return valid.error();
    std::optional<bson_oid_t> after, before;
    if (page.after_id && !(after = parse_id(*page.after_id))) {
      // The API only makes cursors from real ids, so anything else is a corrupt cursor.
      return Error{Errc::invalid, "page cursor id is not 24 lowercase hex digits"};
    }
    if (page.before_id && !(before = parse_id(*page.before_id))) {
      return Error{Errc::invalid, "page cursor id is not 24 lowercase hex digits"};
    }

    auto session = open_session("list users");
    if (!session) return session.error();
    mongoc_collection_t* users = session.value()->users();

    UserPage out;
    {
      Bson filter, reply;
      bson_error_t error;
      const int64_t total = mongoc_collection_count_documents(users, filter.get(), nullptr, nullptr, reply.get(), &error);
      if (total < 0) return fail("count users", error, reply.get());
      out.total = total;
    }

    // limit + 1 rows tell whether more lie in the walking direction.
    const int64_t fetch = int64_t{page.limit} + 1;
    Bson filter, opts;
    bool built = true;
    if (after) built = append_id_range(filter.get(), "$gt", *after);
    if (before) built = append_id_range(filter.get(), "$lt", *before);
    bson_t sort;
    built = built && bson_append_document_begin(opts.get(), "sort", -1, &sort);
    built = built && bson_append_int32(&sort, kFieldId, -1, before ? -1 : 1);
    built = built && bson_append_document_end(opts.get(), &sort);
    built = built && bson_append_int64(opts.get(), "limit", -1, fetch);
    if (!after && !before && page.offset > 0) built = built && bson_append_int64(opts.get(), "skip", -1, page.offset);
    if (!built) return too_large("list users");

    auto rows = find_users(users, filter.get(), opts.get(), "list users");
    if (!rows) return rows.error();
    out.users = std::move(rows).value();
    const bool more = static_cast<int64_t>(out.users.size()) > page.limit;
    if (more) out.users.resize(static_cast<size_t>(page.limit));

    // The flag opposite to the walking direction, which limit + 1 cannot tell.
    if (after) {
      out.has_more_after = more;
      Bson below;
      if (!append_id_range(below.get(), "$lte", *after)) return too_large("list users");
      auto any = exists(users, below.get(), "list users");
      if (!any) return any.error();
      out.has_more_before = any.value();
    } else if (before) {
      std::reverse(out.users.begin(), out.users.end());  // fetched descending, returned ascending
      out.has_more_before = more;
      Bson above;
      if (!append_id_range(above.get(), "$gte", *before)) return too_large("list users");
      auto any = exists(users, above.get(), "list users");
      if (!any) return any.error();
      out.has_more_after = any.value();
    } else {
      out.has_more_after = more;
      out.has_more_before = page.offset > 0 && out.total > 0;
    }
    return out;
  }

  // The exception boundary: no exception (e.g. bad_alloc) escapes into the caller.
  template <class T, class Body>
  Result<T> guarded(std::string_view what, Body&& body) {
    try {
      return body();
    } catch (const std::exception& e) {
      return unavailable(std::string(what) + ": " + e.what());
    } catch (...) {
      return unavailable(std::string(what) + ": unknown exception");
    }
  }

  PoolHandle pool_;
  std::string database_;
  std::string described_;
  std::vector<std::string> secrets_;
};

// Sets a timeout option unless the URL already chose one.
bool default_int_option(mongoc_uri_t* uri, const char* option, int value) {
  if (mongoc_uri_has_option(uri, option)) return true;
  return mongoc_uri_set_option_as_int32(uri, option, value);
}

Result<std::unique_ptr<UserStore>> open_store(const MongoOptions& options) {
  init_driver();
  const auto secrets = url_passwords(options.url);
  const std::string described = redact_url(options.url);

  bson_error_t error;
  UriHandle uri(mongoc_uri_new_with_error(options.url.c_str(), &error));
  if (!uri) {
    return unavailable(scrub("invalid MongoDB URL " + described + ": " + error.message, secrets));
  }
  if (!default_int_option(uri.get(), MONGOC_URI_SERVERSELECTIONTIMEOUTMS, options.server_selection_timeout_ms) ||
      !default_int_option(uri.get(), MONGOC_URI_CONNECTTIMEOUTMS, options.connect_timeout_ms) ||
      !default_int_option(uri.get(), MONGOC_URI_SOCKETTIMEOUTMS, options.socket_timeout_ms)) {
    return unavailable("cannot apply the MongoDB timeouts to " + described);
  }
  // Version checks and "matched 0 → not found or stale" need acknowledged writes.
  const mongoc_write_concern_t* write_concern = mongoc_uri_get_write_concern(uri.get());
  if (write_concern != nullptr && !mongoc_write_concern_is_acknowledged(write_concern)) {
    return unavailable("MongoDB URL " + described + " asks for unacknowledged writes (w=0); usersd needs w>=1");
  }
  const char* database = mongoc_uri_get_database(uri.get());
  std::string database_name = database != nullptr && *database != '\0' ? database : kDefaultDatabase;

  PoolHandle pool(mongoc_client_pool_new_with_error(uri.get(), &error));
  if (!pool) return unavailable(scrub("cannot create a MongoDB client pool: " + std::string(error.message), secrets));
  // Both must be set before the first client is popped.
  if (!mongoc_client_pool_set_error_api(pool.get(), MONGOC_ERROR_API_VERSION_2)) {
    return unavailable("cannot select the MongoDB driver's error API version 2");
  }
  // A URL's own appName wins; setting it twice makes the driver log an error.
  if (mongoc_uri_get_appname(uri.get()) == nullptr) mongoc_client_pool_set_appname(pool.get(), "usersd");
  mongoc_client_pool_max_size(pool.get(), static_cast<uint32_t>(std::max(1, options.pool_size)));

  auto store = std::make_unique<MongoStore>(std::move(pool), std::move(database_name), described, secrets);
  // Also the connectivity check: an unreachable server fails here within the server selection
  // timeout, and the worker exits to be restarted with backoff.
  if (auto indexed = store->ensure_indexes(); !indexed) return indexed.error();
  return std::unique_ptr<UserStore>(std::move(store));
}

}  // namespace

Result<std::unique_ptr<UserStore>> open_mongo_store(const MongoOptions& options) {
  try {
    return open_store(options);
  } catch (const std::exception& e) {
    return unavailable("cannot open MongoDB store " + redact_url(options.url) + ": " + e.what());
  } catch (...) {
    return unavailable("cannot open MongoDB store " + redact_url(options.url) + ": unknown exception");
  }
}

}  // namespace usersd
