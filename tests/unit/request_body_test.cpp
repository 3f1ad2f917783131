#include <doctest/doctest.h>

#include "worker/request_body.hpp"
#include "worker/user_json.hpp"

using namespace usersd;

TEST_CASE("nesting depth ignores brackets inside strings") {
  CHECK(json_nesting_depth("{}") == 1);
  CHECK(json_nesting_depth("[[[]]]") == 3);
  CHECK(json_nesting_depth(R"({"a":"[[[[{{{{"})") == 1);
  CHECK(json_nesting_depth(R"({"a":"\"[[["})") == 1);
  CHECK(json_nesting_depth(R"("just a string")") == 0);
  CHECK(json_nesting_depth(std::string(10000, '[')) == 10000);
}

namespace {

httplib::Request request_with(const std::string& content_type, const std::string& encoding = "") {
  httplib::Request req;
  if (!content_type.empty()) req.set_header("Content-Type", content_type);
  if (!encoding.empty()) req.set_header("Content-Encoding", encoding);
  return req;
}

int status_for(const httplib::Request& req, const MediaTypes& accepted) {
  httplib::Response res;
  return check_body_headers(req, res, accepted) ? 200 : res.status;
}

}  // namespace

TEST_CASE("body headers: media type, charset and encoding") {
  const MediaTypes json = {"application/json"};
  CHECK(status_for(request_with("application/json"), json) == 200);
  CHECK(status_for(request_with("Application/JSON; charset=UTF-8"), json) == 200);
  CHECK(status_for(request_with("application/json; charset=\"utf-8\""), json) == 200);
  CHECK(status_for(request_with("application/json; charset=latin1"), json) == 415);
  CHECK(status_for(request_with("text/plain"), json) == 415);
  CHECK(status_for(request_with(""), json) == 415);
  CHECK(status_for(request_with("application/json", "gzip"), json) == 415);
  CHECK(status_for(request_with("application/json", "identity"), json) == 200);
  CHECK(status_for(request_with("application/merge-patch+json"), {"application/merge-patch+json", "application/json"}) == 200);
}

TEST_CASE("parse_json_body: empty, malformed, too deep, invalid UTF-8") {
  httplib::Response res;
  CHECK_FALSE(parse_json_body("", res).has_value());
  CHECK(res.status == 400);
  for (std::string body : {std::string("{\"a\":"), std::string("{\"a\":\"\xff\"}"), std::string(33, '[') + std::string(33, ']')}) {
    res = httplib::Response();
    CHECK_FALSE(parse_json_body(body, res).has_value());
    CHECK(res.status == 400);
    CHECK(res.get_header_value("Content-Type") == "application/problem+json");
  }
  CHECK(parse_json_body(std::string(32, '[') + std::string(32, ']'), res).has_value());
}

TEST_CASE("ETags and conditional headers") {
  User u;
  u.version = 3;
  CHECK(etag_of(u) == "\"v3\"");
  CHECK(if_match_satisfied("\"v3\"", u));
  CHECK(if_match_satisfied("\"v1\", \"v3\"", u));
  CHECK(if_match_satisfied("*", u));
  CHECK_FALSE(if_match_satisfied("\"v2\"", u));
  CHECK_FALSE(if_match_satisfied("W/\"v3\"", u));  // If-Match compares strongly
  CHECK(if_none_match_matches("W/\"v3\"", u));     // If-None-Match compares weakly
  CHECK(if_none_match_matches("\"v9\" , \"v3\"", u));
  CHECK_FALSE(if_none_match_matches("\"v2\"", u));
}
