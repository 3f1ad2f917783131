// Wall-clock helpers: epoch milliseconds and their RFC 3339 rendering.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace usersd {

int64_t now_ms();
int64_t now_seconds();
// 1733341401123 -> "2024-12-04T19:43:21.123Z"
std::string format_rfc3339_ms(int64_t epoch_ms);
// The inverse, for "YYYY-MM-DDTHH:MM:SS[.fff]Z" (UTC only); nullopt for anything else.
std::optional<int64_t> parse_rfc3339_ms(std::string_view text);

}  // namespace usersd
