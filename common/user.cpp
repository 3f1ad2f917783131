#include "common/user.hpp"

#include <string_view>

namespace usersd {

const char* role_name(Role role) {
  switch (role) {
    case Role::user:
      return "user";
    case Role::admin:
      return "admin";
  }
  // Only reachable through a bad cast; the schema's CHECK constraint will refuse to store it.
  return "unknown";
}

std::optional<Role> parse_role(std::string_view name) {
  if (name == "user") return Role::user;
  if (name == "admin") return Role::admin;
  return std::nullopt;
}

}  // namespace usersd
