// libFuzzer: the query string of GET /v1/users (httplib's parser, then limit/page/cursor validation).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/ids.hpp"
#include "worker/page_query.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string query(reinterpret_cast<const char*>(data), size);
  httplib::Params params;
  httplib::detail::parse_query_text(query, params);
  usersd::PageQuery out;
  const auto errors = usersd::parse_page_query(params, out);
  if (!errors.empty()) return 0;
  const auto& page = out.page;
  if (page.limit < 1 || page.limit > usersd::kMaxPageLimit) std::abort();
  if (page.offset < 0) std::abort();
  if (page.after_id && !usersd::is_object_id(*page.after_id)) std::abort();
  if (page.before_id && !usersd::is_object_id(*page.before_id)) std::abort();
  if (page.after_id && page.before_id) std::abort();
  if (out.page_number && (page.after_id || page.before_id)) std::abort();
  // A cursor we issue must read back as itself.
  if (page.after_id) {
    httplib::Params again{{"cursor", usersd::make_cursor('a', *page.after_id)}};
    usersd::PageQuery round;
    if (!usersd::parse_page_query(again, round).empty() || round.page.after_id != page.after_id) std::abort();
  }
  return 0;
}
