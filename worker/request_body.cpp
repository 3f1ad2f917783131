#include "worker/request_body.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "worker/problem.hpp"

namespace usersd {
namespace {

std::string lowercase_trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  return out;
}

// "application/json; charset=UTF-8" is fine; any other charset is not JSON as RFC 8259 defines it.
bool media_type_accepted(std::string_view header, const MediaTypes& accepted, std::string& why) {
  const auto semicolon = header.find(';');
  const std::string type = lowercase_trimmed(header.substr(0, semicolon));
  if (std::find(accepted.begin(), accepted.end(), type) == accepted.end()) {
    why = "Content-Type must be " + std::string(accepted.front());
    return false;
  }
  if (semicolon == std::string_view::npos) return true;
  std::string_view params = header.substr(semicolon + 1);
  while (!params.empty()) {
    const auto next = params.find(';');
    const std::string param = lowercase_trimmed(params.substr(0, next));
    if (param.rfind("charset=", 0) == 0) {
      std::string charset = param.substr(8);
      charset.erase(std::remove(charset.begin(), charset.end(), '"'), charset.end());
      if (charset != "utf-8") {
        why = "only UTF-8 JSON is accepted";
        return false;
      }
    }
    if (next == std::string_view::npos) break;
    params.remove_prefix(next + 1);
  }
  return true;
}

}  // namespace

int json_nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}') --depth;
  }
  return deepest;
}

bool check_framing(const httplib::Request& req, httplib::Response& res) {
  const auto refuse = [&res](const std::string& why) {
    send_problem(res, 400, why);
    return false;
  };
  const auto lengths = req.headers.equal_range("Content-Length");
  std::optional<std::string> length;
  for (auto it = lengths.first; it != lengths.second; ++it) {
    const std::string& value = it->second;
    if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return refuse("Content-Length must be one decimal number");
    }
    if (length && *length != value) return refuse("conflicting Content-Length headers");
    length = value;
  }
  if (req.has_header("Transfer-Encoding")) {
    // RFC 9112 6.1: chunked must be the only (and final) coding we accept; with Content-Length as well,
    // the request is ambiguous about where it ends, the root of request smuggling.
    if (req.get_header_value_count("Transfer-Encoding") != 1 ||
        lowercase_trimmed(req.get_header_value("Transfer-Encoding")) != "chunked") {
      return refuse("Transfer-Encoding must be exactly \"chunked\"");
    }
    if (length) return refuse("Content-Length and Transfer-Encoding together are ambiguous");
  }
  return true;
}

bool check_body_headers(const httplib::Request& req, httplib::Response& res, const MediaTypes& accepted) {
  // Decompressing would bypass the body size limit (a zip bomb), so compressed bodies are refused.
  if (req.has_header("Content-Encoding") && lowercase_trimmed(req.get_header_value("Content-Encoding")) != "identity") {
    res.set_header("Accept-Encoding", "identity");
    send_problem(res, 415, "compressed request bodies are not accepted");
    return false;
  }
  std::string why;
  if (!req.has_header("Content-Type")) {
    send_problem(res, 415, "Content-Type must be " + std::string(accepted.front()));
    return false;
  }
  if (!media_type_accepted(req.get_header_value("Content-Type"), accepted, why)) {
    send_problem(res, 415, why);
    return false;
  }
  return true;
}

std::optional<nlohmann::json> parse_json_body(const std::string& body, httplib::Response& res) {
  if (body.empty()) {
    send_problem(res, 400, "a JSON request body is required");
    return std::nullopt;
  }
  // A raw NUL is never valid JSON, and nlohmann's parser would stop at it and accept the text before it.
  if (body.find('\0') != std::string::npos) {
    send_problem(res, 400, "malformed JSON: NUL byte in the request body");
    return std::nullopt;
  }
  // Checked before parsing: nlohmann's recursive parser must never see a stack-exhausting document.
  if (json_nesting_depth(body) > kMaxJsonDepth) {
    send_problem(res, 400, "JSON nesting is deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return std::nullopt;
  }
  try {
    // RFC 8259 leaves duplicate names undefined; parsers disagree on which one wins, which lets a body
    // mean one thing to a proxy or WAF and another to us. Refused instead.
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    auto json = nlohmann::json::parse(body, [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if (event == E::object_start) open_objects.emplace_back();
      else if (event == E::object_end && !open_objects.empty()) open_objects.pop_back();
      else if (event == E::key && !open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
               duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
      return true;
    });
    if (!duplicate.empty()) {
      if (duplicate.size() > 64) duplicate = duplicate.substr(0, 64) + "...";
      send_problem(res, 400, "malformed JSON: the member name \"" + duplicate + "\" appears twice in one object");
      return std::nullopt;
    }
    return json;
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for numbers beyond a double (1e999): both are the client's JSON.
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 9: ..."; keep the useful tail.
    std::string what = e.what();
    const auto tail = what.find("] ");
    send_problem(res, 400, "malformed JSON: " + (tail == std::string::npos ? what : what.substr(tail + 2)));
    return std::nullopt;
  }
}

}  // namespace usersd
