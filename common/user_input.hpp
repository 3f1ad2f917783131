// Validation of user data arriving from clients: which fields each operation takes, and their rules.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/user.hpp"

namespace usersd {

struct FieldError {
  std::string field;
  std::string message;
};
using FieldErrors = std::vector<FieldError>;

enum class UserOperation {
  register_self,  // POST /v1/auth/register
  create,         // POST /v1/users (admin)
  replace,        // PUT /v1/users/{id}
  patch,          // PATCH /v1/users/{id} (JSON merge patch)
};

// A field that may be absent, present, or explicitly null (null clears an optional field).
using OptionalField = std::optional<std::optional<std::string>>;

struct UserInput {
  std::optional<std::string> email;
  std::optional<std::string> password;
  std::optional<std::string> first_name;
  std::optional<std::string> last_name;
  OptionalField phone;
  OptionalField country;
  OptionalField state;
  OptionalField user_name;
  std::optional<Role> role;
};

struct PasswordLengths {
  size_t min = 8;
  size_t max = 128;
};

// Checks `body` for `operation`; fills `out` only with valid fields. Returns every problem found.
FieldErrors parse_user_input(const nlohmann::json& body, UserOperation operation, bool caller_is_admin,
                             PasswordLengths password_lengths, UserInput& out);

// Applies validated input to a stored user: replace clears optional fields that are absent,
// patch leaves them alone. At registration, names missing from an old-client body {userName, email,
// password} come from the userName (names_from_user_name). Password hashing is the caller's job.
void apply_user_input(const UserInput& input, UserOperation operation, User& user);

std::string normalize_email(std::string_view email);
// userName: 1..64 characters of A-Z a-z 0-9 . _ - @ + (ASCII only, so "unique ignoring case" has one meaning).
inline constexpr size_t kUserNameMax = 64;
bool is_valid_user_name(std::string_view user_name);
// The key userNames are unique by: ASCII lowercase.
std::string normalize_user_name(std::string_view user_name);
// First and last name for an account that only has a userName (old clients, legacy import): split at the
// first '.', '_', '-', '@', '+' or space with text on both sides ("ada.lovelace" -> "ada", "lovelace");
// otherwise both names are the whole userName. Cut to the 100-character name limit.
std::pair<std::string, std::string> names_from_user_name(std::string_view user_name);
bool is_valid_email(std::string_view email);
// Number of code points in valid UTF-8 text.
size_t utf8_length(std::string_view text);

}  // namespace usersd
