// The one interface with two implementations (SQLite embedded, MongoDB for fleets).
// Every method is safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/user.hpp"

namespace usersd {

// Keyset pagination ordered by id ascending. At most one of after_id / before_id is set.
// offset is used only for page-number pagination (when neither id is set).
struct PageRequest {
  int limit = 20;                       // 1..100 (validated by the caller)
  std::optional<std::string> after_id;  // users with id > after_id, ascending
  std::optional<std::string> before_id; // users with id < before_id (the page just before it), ascending
  int64_t offset = 0;
};

struct UserPage {
  std::vector<User> users;  // ascending by id
  bool has_more_after = false;   // there are users after the last one returned
  bool has_more_before = false;  // there are users before the first one returned
  int64_t total = 0;             // all users in the store
};

// Errc::conflict messages, so callers can tell which unique key clashed.
inline constexpr const char* kEmailTakenMessage = "email already registered";
inline constexpr const char* kUserNameTakenMessage = "userName already taken";

class UserStore {
 public:
  virtual ~UserStore() = default;

  // Inserts a fully formed user (id, timestamps, version, hash set by the caller).
  // Errc::conflict when email_normalized (kEmailTakenMessage) or, ignoring ASCII case, user_name
  // (kUserNameTakenMessage) is taken.
  virtual Result<User> create(const User& user) = 0;
  virtual Result<User> find_by_id(std::string_view id) = 0;
  virtual Result<User> find_by_email(std::string_view email_normalized) = 0;
  // Matches user_name ignoring ASCII case.
  virtual Result<User> find_by_user_name(std::string_view user_name) = 0;
  virtual Result<UserPage> list(const PageRequest& page) = 0;
  // Replaces every stored field of user.id, but only if the stored version equals user.version;
  // the stored (and returned) version becomes user.version + 1.
  // Errc::not_found, Errc::precondition_failed (version moved), Errc::conflict (email or userName taken).
  virtual Result<User> update(const User& user) = 0;
  // Inserts user.id, or replaces it, keeping every field exactly as given (version and timestamps too):
  // what `usersd import` needs to be lossless and idempotent. Errc::conflict when another id has the email
  // or the userName.
  virtual Result<User> put(const User& user) = 0;
  // Deletes user id; when expected_version is set, only if it still matches.
  virtual Status remove(std::string_view id, std::optional<int64_t> expected_version) = 0;
  // Cheap round trip proving the store answers (for /healthcheck).
  virtual Status ping() = 0;
  // Human readable description with credentials redacted, e.g. "sqlite:///var/lib/usersd/usersd.db".
  virtual std::string describe() const = 0;
};

}  // namespace usersd
