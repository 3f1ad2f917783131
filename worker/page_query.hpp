// GET /v1/users query parameters: limit, page and the opaque cursors, validated into a PageRequest.
#pragma once

#include <httplib.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/user_input.hpp"
#include "common/user_store.hpp"

namespace usersd {

inline constexpr int kDefaultPageLimit = 20;
inline constexpr int kMaxPageLimit = 100;
inline constexpr int64_t kMaxPageNumber = 1000000;

struct PageQuery {
  PageRequest page;
  std::optional<int64_t> page_number;  // page=N paging instead of cursors
};

// Reads limit/page/cursor from the request's params; every bad or unknown one is listed in the result.
FieldErrors parse_page_query(const httplib::Params& params, PageQuery& out);

// Cursors are opaque to clients: base64url("a:<id>") pages forward after id, "b:<id>" backward before it.
std::string make_cursor(char direction, const std::string& id);

}  // namespace usersd
