// Wall-clock helpers: epoch milliseconds and their RFC 3339 rendering.
#pragma once

#include <cstdint>
#include <string>

namespace usersd {

int64_t now_ms();
int64_t now_seconds();
// 1733341401123 -> "2024-12-04T19:43:21.123Z"
std::string format_rfc3339_ms(int64_t epoch_ms);

}  // namespace usersd
