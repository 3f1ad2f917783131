#include "worker/page_query.hpp"

#include <charconv>

#include "common/ids.hpp"
#include "common/jwt.hpp"

namespace usersd {
namespace {

std::optional<int64_t> parse_int(const std::string& text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

bool read_cursor(const std::string& cursor, PageRequest& page) {
  auto decoded = base64url_decode(cursor);
  if (!decoded) return false;
  const std::string& text = decoded.value();
  if (text.size() != 26 || text[1] != ':' || !is_object_id(std::string_view(text).substr(2))) return false;
  if (text[0] == 'a') page.after_id = text.substr(2);
  else if (text[0] == 'b') page.before_id = text.substr(2);
  else return false;
  return true;
}

// One value per parameter: a repeated one is ambiguous (and a classic parameter-pollution trick).
std::optional<std::string> single(const httplib::Params& params, const char* name, FieldErrors& errors) {
  const auto count = params.count(name);
  if (count == 0) return std::nullopt;
  if (count > 1) {
    errors.push_back({name, "must be given once"});
    return std::nullopt;
  }
  return params.find(name)->second;
}

}  // namespace

std::string make_cursor(char direction, const std::string& id) { return base64url_encode(std::string(1, direction) + ":" + id); }

FieldErrors parse_page_query(const httplib::Params& params, PageQuery& out) {
  FieldErrors errors;
  // Unknown parameters are refused, not ignored: "limit[$gt]=0" must not look like it worked.
  for (const auto& [name, value] : params) {
    if (name != "limit" && name != "page" && name != "cursor" &&
        (errors.empty() || errors.back().field != name)) {
      errors.push_back({name.size() > 64 ? name.substr(0, 64) + "..." : name, "is not a known parameter"});
    }
  }
  out.page.limit = kDefaultPageLimit;
  if (auto text = single(params, "limit", errors)) {
    auto limit = parse_int(*text);
    if (!limit || *limit < 1 || *limit > kMaxPageLimit) errors.push_back({"limit", "must be an integer from 1 to 100"});
    else out.page.limit = static_cast<int>(*limit);
  }
  const auto page_text = single(params, "page", errors);
  if (page_text) {
    out.page_number = parse_int(*page_text);
    if (!out.page_number || *out.page_number < 1 || *out.page_number > kMaxPageNumber) {
      errors.push_back({"page", "must be an integer from 1 to 1000000"});
    }
  }
  if (auto cursor = single(params, "cursor", errors)) {
    if (params.count("page") > 0) errors.push_back({"cursor", "cannot be combined with page"});
    else if (!read_cursor(*cursor, out.page)) errors.push_back({"cursor", "is not a cursor this server issued"});
  }
  if (errors.empty() && out.page_number) out.page.offset = (*out.page_number - 1) * out.page.limit;
  return errors;
}

}  // namespace usersd
