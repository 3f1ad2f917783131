// The user record as the domain and the stores see it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace usersd {

enum class Role { user, admin };

const char* role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

struct User {
  std::string id;              // 24 lowercase hex chars (ObjectId-shaped, time-ordered)
  std::string email;           // as given by the user (trimmed)
  std::string email_normalized;  // lowercase; unique across the store
  std::string first_name;
  std::string last_name;
  std::optional<std::string> phone;
  std::optional<std::string> country;
  std::optional<std::string> state;
  // Optional handle from the Node.js service's accounts; unique ignoring ASCII case when present.
  std::optional<std::string> user_name;
  Role role = Role::user;
  std::string password_hash;   // Argon2id encoded string; never leaves the store layer in responses
  int64_t created_at_ms = 0;   // Unix epoch milliseconds, UTC
  int64_t updated_at_ms = 0;
  int64_t version = 1;         // bumped on every update; the ETag is derived from it
};

}  // namespace usersd
