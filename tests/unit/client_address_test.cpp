#include <doctest/doctest.h>

#include "common/client_address.hpp"

using usersd::resolve_client_address;
using usersd::TrustedProxies;

namespace {

TrustedProxies trusted(const std::vector<std::string>& entries) {
  auto parsed = TrustedProxies::parse(entries);
  REQUIRE(std::holds_alternative<TrustedProxies>(parsed));
  return std::get<TrustedProxies>(parsed);
}

std::string parse_error(const std::vector<std::string>& entries) {
  auto parsed = TrustedProxies::parse(entries);
  REQUIRE(std::holds_alternative<std::string>(parsed));
  return std::get<std::string>(parsed);
}

}  // namespace

TEST_CASE("trusted proxies match addresses and networks of both families") {
  const auto t = trusted({"10.0.0.0/8", "192.168.1.7", "fd00::/8", "172.16.0.0/12"});
  CHECK(t.contains("10.1.2.3"));
  CHECK(t.contains("::ffff:10.1.2.3"));  // how a dual-stack listener reports an IPv4 peer
  CHECK(t.contains("192.168.1.7"));
  CHECK_FALSE(t.contains("192.168.1.8"));
  CHECK(t.contains("172.31.255.255"));
  CHECK_FALSE(t.contains("172.32.0.0"));
  CHECK(t.contains("fd12:3456::1"));
  CHECK_FALSE(t.contains("fe80::1"));
  CHECK_FALSE(t.contains("not-an-ip"));
  CHECK_FALSE(t.contains(""));
  CHECK(trusted({"0.0.0.0/0"}).contains("8.8.8.8"));
  CHECK_FALSE(trusted({"0.0.0.0/0"}).contains("2001:db8::1"));
  CHECK(trusted({}).empty());
}

TEST_CASE("bad trusted proxy entries are named") {
  CHECK(parse_error({"10.0.0.0/8", "10.0.0.0/33"}).find("10.0.0.0/33") != std::string::npos);
  CHECK(parse_error({"fd00::/129"}).find("0-128") != std::string::npos);
  CHECK(parse_error({"example.com"}).find("not an IP address") != std::string::npos);
  CHECK(parse_error({"10.0.0.0/"}).find("prefix") != std::string::npos);
  CHECK(parse_error({"10.0.0.0/8x"}).find("prefix") != std::string::npos);
}

TEST_CASE("the client address believes X-Forwarded-For only as far as trusted hops wrote it") {
  const auto alb = trusted({"10.0.0.0/8"});
  SUBCASE("no proxy trusted: the peer, whatever the header says") {
    CHECK(resolve_client_address("203.0.113.9", "1.2.3.4", TrustedProxies{}) == "203.0.113.9");
  }
  SUBCASE("an untrusted peer cannot claim another address") {
    CHECK(resolve_client_address("203.0.113.9", "1.2.3.4", alb) == "203.0.113.9");
  }
  SUBCASE("behind the ALB: the entry it appended") {
    CHECK(resolve_client_address("10.0.1.5", "198.51.100.7", alb) == "198.51.100.7");
  }
  SUBCASE("a forged left part is ignored: rotating it gains nothing") {
    CHECK(resolve_client_address("10.0.1.5", "1.1.1.1, 198.51.100.7", alb) == "198.51.100.7");
    CHECK(resolve_client_address("10.0.1.5", "2.2.2.2,198.51.100.7", alb) == "198.51.100.7");
  }
  SUBCASE("a chain of trusted proxies is walked") {
    CHECK(resolve_client_address("10.0.1.5", "198.51.100.7, 10.9.9.9", alb) == "198.51.100.7");
  }
  SUBCASE("all hops trusted: the left-most") {
    CHECK(resolve_client_address("10.0.1.5", "10.2.2.2, 10.3.3.3", alb) == "10.2.2.2");
  }
  SUBCASE("no header or garbage: the peer") {
    CHECK(resolve_client_address("10.0.1.5", "", alb) == "10.0.1.5");
    CHECK(resolve_client_address("10.0.1.5", " , ", alb) == "10.0.1.5");
    CHECK(resolve_client_address("10.0.1.5", "evil\r\nX: y", alb) == "10.0.1.5");
    CHECK(resolve_client_address("10.0.1.5", "198.51.100.7, unknown", alb) == "10.0.1.5");
  }
  SUBCASE("ports and brackets are stripped") {
    CHECK(resolve_client_address("10.0.1.5", "198.51.100.7:4711", alb) == "198.51.100.7");
    CHECK(resolve_client_address("10.0.1.5", "[2001:db8::7]:4711", alb) == "2001:db8::7");
    CHECK(resolve_client_address("10.0.1.5", "2001:db8::7", alb) == "2001:db8::7");
  }
}
