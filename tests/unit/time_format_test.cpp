#include <doctest/doctest.h>

#include "common/time_format.hpp"

using namespace usersd;

TEST_CASE("RFC 3339 round trip at millisecond precision") {
  for (int64_t ms : {int64_t{0}, int64_t{1733341401123}, int64_t{1796414113687}, int64_t{951782400999}}) {
    const std::string text = format_rfc3339_ms(ms);
    CHECK(parse_rfc3339_ms(text) == ms);
  }
  CHECK(format_rfc3339_ms(1733341401123) == "2024-12-04T19:43:21.123Z");
  CHECK(parse_rfc3339_ms("2024-12-04T19:43:21Z") == int64_t{1733341401000});
  CHECK(parse_rfc3339_ms("2024-12-04T19:43:21.5Z") == int64_t{1733341401500});
}

TEST_CASE("RFC 3339 parsing refuses what it cannot represent exactly") {
  for (const char* bad : {"", "2024-12-04", "2024-12-04T19:43:21", "2024-12-04T19:43:21+02:00", "2024-13-04T19:43:21Z",
                          "2024-12-04T19:43:21.Z", "2024-12-04 19:43:21Z", "x2024-12-04T19:43:21Z"}) {
    CHECK_MESSAGE(!parse_rfc3339_ms(bad).has_value(), bad);
  }
}
