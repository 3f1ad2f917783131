// The user resource as clients see it: camelCase fields, RFC 3339 times, _links, and its ETag.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/user.hpp"

namespace usersd {

std::string user_path(std::string_view id);
nlohmann::json user_to_json(const User& user);
std::string etag_of(const User& user);

// RFC 9110 conditional headers. If-Match uses strong comparison, If-None-Match weak.
bool if_match_satisfied(std::string_view header, const User& current);
bool if_none_match_matches(std::string_view header, const User& current);

}  // namespace usersd
