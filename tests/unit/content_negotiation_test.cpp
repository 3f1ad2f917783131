#include <doctest/doctest.h>

#include "worker/content_negotiation.hpp"

using namespace usersd;

TEST_CASE("quality_of: exact beats wildcard, q defaults to 1, absent is 0") {
  CHECK(quality_of("text/html", "text/html") == 1.0);
  CHECK(quality_of("text/html;q=0.1, application/json", "text/html") == doctest::Approx(0.1));
  CHECK(quality_of("text/html;q=0.1, application/json", "application/json") == 1.0);
  CHECK(quality_of("text/*;q=0.5, */*;q=0.1", "text/html") == doctest::Approx(0.5));
  CHECK(quality_of("text/*;q=0.5, */*;q=0.1", "application/json") == doctest::Approx(0.1));
  CHECK(quality_of("text/html;q=0, */*", "text/html") == 0.0);
  CHECK(quality_of("application/json", "text/html") == 0.0);
  CHECK(quality_of("", "text/html") == 0.0);
}

TEST_CASE("accepted_encodings drops codings refused with q=0") {
  CHECK(accepted_encodings("gzip, br") == "br, gzip");
  CHECK(accepted_encodings("gzip;q=0") == "");
  CHECK(accepted_encodings("gzip;q=0, br;q=0.5") == "br");
  CHECK(accepted_encodings("*") == "br, gzip");
  CHECK(accepted_encodings("*;q=0, gzip") == "gzip");
  CHECK(accepted_encodings("identity") == "");
}
