// Turning a request body into JSON: media type, size, encoding, UTF-8 and nesting are checked here,
// so handlers only ever see a well-formed document.
#pragma once

#include <httplib.h>

#include <optional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace usersd {

inline constexpr int kMaxJsonDepth = 32;

// Media types a route accepts, e.g. {"application/json", "application/merge-patch+json"}.
using MediaTypes = std::vector<std::string_view>;

// Rejects requests whose body framing is ambiguous (request smuggling shapes): several or malformed
// Content-Length values, a Transfer-Encoding other than exactly "chunked", or both headers. 400.
bool check_framing(const httplib::Request& req, httplib::Response& res);

// Rejects Content-Encoding and unsupported Content-Type (415). Called before the body is read.
bool check_body_headers(const httplib::Request& req, httplib::Response& res, const MediaTypes& accepted);

// Parses a request body; on failure sends 400 and returns nullopt.
std::optional<nlohmann::json> parse_json_body(const std::string& body, httplib::Response& res);

// Exposed for tests: the deepest array/object nesting in `text`, ignoring brackets inside strings.
int json_nesting_depth(std::string_view text);

}  // namespace usersd
