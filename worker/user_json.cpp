#include "worker/user_json.hpp"

#include "common/time_format.hpp"

namespace usersd {
namespace {

// Calls fn(tag) for each entity-tag in a comma-separated header value, tags kept with their quotes and W/.
template <class Fn>
bool any_tag(std::string_view header, Fn fn) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view tag = header.substr(0, comma);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (fn(tag)) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string user_path(std::string_view id) { return "/v1/users/" + std::string(id); }

nlohmann::json user_to_json(const User& user) {
  nlohmann::json out = {
      {"id", user.id},
      {"email", user.email},
      {"firstName", user.first_name},
      {"lastName", user.last_name},
      {"role", role_name(user.role)},
      {"createdAt", format_rfc3339_ms(user.created_at_ms)},
      {"updatedAt", format_rfc3339_ms(user.updated_at_ms)},
      {"_links", {{"self", {{"href", user_path(user.id)}}}}},
  };
  if (user.phone) out["phone"] = *user.phone;
  if (user.country) out["country"] = *user.country;
  if (user.state) out["state"] = *user.state;
  if (user.user_name) out["userName"] = *user.user_name;
  return out;
}

std::string etag_of(const User& user) { return "\"v" + std::to_string(user.version) + "\""; }

bool if_match_satisfied(std::string_view header, const User& current) {
  const std::string etag = etag_of(current);
  return any_tag(header, [&](std::string_view tag) { return tag == "*" || tag == etag; });
}

bool if_none_match_matches(std::string_view header, const User& current) {
  const std::string etag = etag_of(current);
  return any_tag(header, [&](std::string_view tag) {
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    return tag == "*" || tag == etag;
  });
}

}  // namespace usersd
