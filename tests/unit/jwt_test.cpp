// Attack tokens are built by hand and signed with the real key, so each one is rejected for the
// property under test and not merely for a broken signature.
#include "common/jwt.hpp"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using nlohmann::json;
using usersd::base64url_decode;
using usersd::base64url_encode;
using usersd::JwtClaims;
using usersd::JwtSettings;
using usersd::jwt_issue;
using usersd::jwt_verify;
using usersd::Result;

namespace {

constexpr int64_t kNow = 1'700'000'000;
const std::string kSecret = "0123456789abcdef0123456789abcdef";  // exactly 32 bytes
const std::string kGoodHeader = R"({"alg":"HS256","typ":"JWT"})";

JwtSettings settings() {
  JwtSettings s;
  s.secret = kSecret;
  s.issuer = "usersd";
  s.audience = "usersd-api";
  s.ttl_seconds = 3600;
  s.leeway_seconds = 30;
  return s;
}

json good_payload() {
  return json{{"iss", "usersd"}, {"aud", "usersd-api"}, {"sub", "user-42"},
              {"iat", kNow},     {"exp", kNow + 3600},  {"jti", "dGVzdC1qdGk"}};
}

std::string hmac_b64(std::string_view key, std::string_view input) {
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  crypto_auth_hmacsha256_final(&st, mac.data());
  return base64url_encode({reinterpret_cast<const char*>(mac.data()), mac.size()});
}

std::string sign(std::string_view header_json, std::string_view payload_json,
                 std::string_view key = kSecret) {
  std::string input = base64url_encode(header_json) + "." + base64url_encode(payload_json);
  return input + "." + hmac_b64(key, input);
}

std::string sign(const json& payload) { return sign(kGoodHeader, payload.dump()); }
std::string sign_header(std::string_view header_json) {
  return sign(header_json, good_payload().dump());
}

// "<ok>" or the rejection reason, so a failing CHECK shows why.
std::string outcome(const Result<JwtClaims>& r) { return r.ok() ? "<ok>" : r.error().message; }
std::string verify(const std::string& token, int64_t now = kNow) {
  return outcome(jwt_verify(settings(), token, now));
}

// Replaces the last character with `c`, or with another letter when it already is `c`, so the token always changes.
std::string replace_last_char(std::string s, char c) {
  s.back() = s.back() == c ? static_cast<char>(c == 'A' ? 'Q' : 'A') : c;
  return s;
}

}  // namespace

TEST_SUITE("base64url") {
  TEST_CASE("RFC 4648 vectors round trip") {
    const std::pair<std::string, std::string> vectors[] = {
        {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (const auto& [plain, encoded] : vectors) {
      CHECK(base64url_encode(plain) == encoded);
      auto decoded = base64url_decode(encoded);
      REQUIRE(decoded.ok());
      CHECK(decoded.value() == plain);
    }
  }

  TEST_CASE("uses the URL-safe alphabet") {
    const std::string bytes("\xfb\xff\xbf", 3);
    CHECK(base64url_encode(bytes) == "-_-_");
    auto decoded = base64url_decode("-_-_");
    REQUIRE(decoded.ok());
    CHECK(decoded.value() == bytes);
  }

  TEST_CASE("all byte values round trip") {
    std::string bytes;
    for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
    for (size_t len = 0; len <= bytes.size(); len += 37) {
      auto decoded = base64url_decode(base64url_encode(bytes.substr(0, len)));
      REQUIRE(decoded.ok());
      CHECK(decoded.value() == bytes.substr(0, len));
    }
  }

  TEST_CASE("strict decoding") {
    CHECK_FALSE(base64url_decode("Zg==").ok());   // padding
    CHECK_FALSE(base64url_decode("Zm9=").ok());
    CHECK_FALSE(base64url_decode("+AAA").ok());   // standard alphabet
    CHECK_FALSE(base64url_decode("/AAA").ok());
    CHECK_FALSE(base64url_decode("Zm 9v").ok());  // whitespace
    CHECK_FALSE(base64url_decode("Zm9v\n").ok());
    CHECK_FALSE(base64url_decode("Z").ok());      // impossible length
    CHECK_FALSE(base64url_decode("Zm9vY").ok());
    CHECK_FALSE(base64url_decode(std::string("Zm\0v", 4)).ok());
  }

  TEST_CASE("non-canonical trailing bits are rejected") {
    CHECK(base64url_decode("Zg").ok());
    CHECK_FALSE(base64url_decode("Zh").ok());   // same byte 'f', low 4 bits set
    CHECK_FALSE(base64url_decode("Zv").ok());
    CHECK(base64url_decode("Zm8").ok());
    CHECK_FALSE(base64url_decode("Zm9").ok());  // same bytes "fo", low 2 bits set
  }
}

TEST_SUITE("jwt") {
  TEST_CASE("issue then verify round trip") {
    const std::string token = jwt_issue(settings(), "user-42", kNow);
    auto result = jwt_verify(settings(), token, kNow);
    REQUIRE_MESSAGE(result.ok(), outcome(result));
    CHECK(result.value().sub == "user-42");
    CHECK(result.value().iat == kNow);
    CHECK(result.value().exp == kNow + 3600);
    auto jti = base64url_decode(result.value().jti);
    REQUIRE(jti.ok());
    CHECK(jti.value().size() == 16);

    CHECK(token.substr(0, token.find('.')) == base64url_encode(kGoodHeader));
    auto payload = json::parse(base64url_decode(token.substr(token.find('.') + 1,
                                                             token.rfind('.') - token.find('.') - 1))
                                   .value());
    CHECK(payload["iss"] == "usersd");
    CHECK(payload["aud"] == "usersd-api");
  }

  TEST_CASE("each token gets a fresh jti") {
    auto a = jwt_verify(settings(), jwt_issue(settings(), "u", kNow), kNow);
    auto b = jwt_verify(settings(), jwt_issue(settings(), "u", kNow), kNow);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a.value().jti != b.value().jti);
  }

  TEST_CASE("keys longer than the HMAC block work") {
    JwtSettings s = settings();
    s.secret = std::string(100, 'k');
    auto result = jwt_verify(s, jwt_issue(s, "u", kNow), kNow);
    CHECK_MESSAGE(result.ok(), outcome(result));
    CHECK(outcome(jwt_verify(settings(), jwt_issue(s, "u", kNow), kNow)) == "bad signature");
  }

  TEST_CASE("hand-built token is accepted (the test helper signs correctly)") {
    CHECK(verify(sign(good_payload())) == "<ok>");
    CHECK(verify(sign_header(R"({"alg":"HS256"})")) == "<ok>");  // typ is optional
    CHECK(verify(sign_header(R"({"alg":"HS256","kid":"k1"})")) == "<ok>");
  }

  TEST_CASE("one-shot crypto_auth_hmacsha256 agrees with issued signatures") {
    const std::string token = jwt_issue(settings(), "user-42", kNow);
    const std::string input = token.substr(0, token.rfind('.'));
    std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
    crypto_auth_hmacsha256(mac.data(), reinterpret_cast<const unsigned char*>(input.data()),
                           input.size(), reinterpret_cast<const unsigned char*>(kSecret.data()));
    CHECK(token.substr(token.rfind('.') + 1) ==
          base64url_encode({reinterpret_cast<const char*>(mac.data()), mac.size()}));
  }

  TEST_CASE("RFC 7515 A.1 signature verifies") {
    // Known-answer test: the payload has no aud, so getting as far as the audience check
    // proves the signature matched.
    JwtSettings s = settings();
    s.secret = base64url_decode(
                   "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
                   .value();
    s.issuer = "joe";
    const std::string token =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    CHECK(outcome(jwt_verify(s, token, 1300819380)) == "wrong audience");
    CHECK(outcome(jwt_verify(s, replace_last_char(token, 'A'), 1300819380)) == "bad signature");
  }

  TEST_CASE("expiry honours leeway") {
    const std::string token = jwt_issue(settings(), "u", kNow);
    CHECK(verify(token, kNow + 3600) == "<ok>");
    CHECK(verify(token, kNow + 3600 + 30) == "<ok>");
    CHECK(verify(token, kNow + 3600 + 31) == "token expired");
  }

  TEST_CASE("iat in the future is rejected beyond leeway") {
    json p = good_payload();
    p["iat"] = kNow + 30;
    CHECK(verify(sign(p)) == "<ok>");
    p["iat"] = kNow + 31;
    CHECK(verify(sign(p)) == "token not yet valid");
  }

  TEST_CASE("nbf in the future is rejected") {
    json p = good_payload();
    p["nbf"] = kNow + 10;
    CHECK(verify(sign(p)) == "<ok>");
    p["nbf"] = kNow + 100;
    CHECK(verify(sign(p)) == "token not yet valid");
    p["nbf"] = "soon";
    CHECK(verify(sign(p)) == "missing or invalid nbf");
  }

  TEST_CASE("issuer must match") {
    json p = good_payload();
    p["iss"] = "someone-else";
    CHECK(verify(sign(p)) == "wrong issuer");
    p["iss"] = json::array({"usersd"});
    CHECK(verify(sign(p)) == "wrong issuer");
    p.erase("iss");
    CHECK(verify(sign(p)) == "wrong issuer");
  }

  TEST_CASE("audience must match, as a string or inside an array") {
    json p = good_payload();
    p["aud"] = "other-api";
    CHECK(verify(sign(p)) == "wrong audience");
    p["aud"] = json::array({"other-api", "usersd-api"});
    CHECK(verify(sign(p)) == "<ok>");
    p["aud"] = json::array({"other-api", "usersd-api-2"});
    CHECK(verify(sign(p)) == "wrong audience");
    p["aud"] = json::array();
    CHECK(verify(sign(p)) == "wrong audience");
    p["aud"] = 42;
    CHECK(verify(sign(p)) == "wrong audience");
    p.erase("aud");
    CHECK(verify(sign(p)) == "wrong audience");
  }

  TEST_CASE("tampered payload is rejected") {
    const std::string token = jwt_issue(settings(), "user-42", kNow);
    json p = json::parse(base64url_decode(token.substr(token.find('.') + 1,
                                                       token.rfind('.') - token.find('.') - 1))
                             .value());
    p["sub"] = "admin";
    const std::string forged = base64url_encode(kGoodHeader) + "." + base64url_encode(p.dump()) +
                               token.substr(token.rfind('.'));
    CHECK(verify(forged) == "bad signature");
  }

  TEST_CASE("tampered signature is rejected") {
    const std::string token = jwt_issue(settings(), "user-42", kNow);
    std::string sig = base64url_decode(token.substr(token.rfind('.') + 1)).value();
    sig[5] = static_cast<char>(sig[5] ^ 0x01);
    CHECK(verify(token.substr(0, token.rfind('.') + 1) + base64url_encode(sig)) == "bad signature");
    // Truncated or extended MACs are never compared.
    CHECK(verify(token.substr(0, token.rfind('.') + 1) + base64url_encode(sig.substr(0, 16))) ==
          "bad signature");
    CHECK(verify(token.substr(0, token.rfind('.') + 1) + base64url_encode(sig + "x")) ==
          "bad signature");
  }

  TEST_CASE("signature from another key is rejected") {
    CHECK(verify(sign(kGoodHeader, good_payload().dump(), "another-32-byte-secret-key-....."))
          == "bad signature");
  }

  TEST_CASE("alg none is rejected, with or without a signature") {
    const std::string none_header = R"({"alg":"none","typ":"JWT"})";
    const std::string unsigned_token =
        base64url_encode(none_header) + "." + base64url_encode(good_payload().dump()) + ".";
    CHECK(verify(unsigned_token) == "unsupported algorithm");
    CHECK(verify(sign_header(none_header)) == "unsupported algorithm");
    CHECK(verify(sign_header(R"({"alg":"None","typ":"JWT"})")) == "unsupported algorithm");
    CHECK(verify(sign_header(R"({"alg":"NONE"})")) == "unsupported algorithm");
  }

  TEST_CASE("algorithms other than exactly HS256 are rejected") {
    for (const char* header : {R"({"alg":"HS384","typ":"JWT"})", R"({"alg":"HS512","typ":"JWT"})",
                               R"({"alg":"RS256","typ":"JWT"})", R"({"alg":"ES256","typ":"JWT"})",
                               R"({"alg":"hs256","typ":"JWT"})", R"({"alg":"HS256 ","typ":"JWT"})",
                               R"({"typ":"JWT"})", R"({"alg":null})", R"({"alg":256})",
                               R"({"alg":["HS256"]})", R"({"alg":{"name":"HS256"}})"}) {
      CAPTURE(header);
      CHECK(verify(sign_header(header)) == "unsupported algorithm");
    }
  }

  TEST_CASE("header must be a JSON object") {
    for (const char* header : {R"("HS256")", R"(["HS256"])", "null", "42", "", "{", "not json",
                               R"({"alg":"HS256"} trailing)"}) {
      CAPTURE(header);
      CHECK(verify(sign_header(header)) == "malformed token");
    }
  }

  TEST_CASE("duplicate keys are rejected") {
    CHECK(verify(sign_header(R"({"alg":"none","alg":"HS256"})")) == "malformed token");
    CHECK(verify(sign(kGoodHeader,
                      R"({"iss":"usersd","aud":"usersd-api","sub":"a","sub":"admin","iat":1700000000,)"
                      R"("exp":1700003600,"jti":"x"})")) == "malformed token");
  }

  TEST_CASE("typ, when present, must be JWT") {
    CHECK(verify(sign_header(R"({"alg":"HS256","typ":"JWE"})")) == "unsupported token type");
    CHECK(verify(sign_header(R"({"alg":"HS256","typ":"jwt"})")) == "unsupported token type");
    CHECK(verify(sign_header(R"({"alg":"HS256","typ":null})")) == "unsupported token type");
  }

  TEST_CASE("crit and key-bearing headers are rejected") {
    CHECK(verify(sign_header(R"({"alg":"HS256","crit":["exp"]})")) == "unsupported header");
    CHECK(verify(sign_header(R"({"alg":"HS256","jku":"https://evil.example/k"})")) ==
          "unsupported header");
    CHECK(verify(sign_header(R"({"alg":"HS256","jwk":{"kty":"oct","k":"AA"}})")) ==
          "unsupported header");
    CHECK(verify(sign_header(R"({"alg":"HS256","x5u":"https://evil.example/c"})")) ==
          "unsupported header");
  }

  TEST_CASE("exactly three parts") {
    const std::string token = jwt_issue(settings(), "u", kNow);
    CHECK(verify(token.substr(0, token.rfind('.'))) == "malformed token");
    CHECK(verify(token + ".") == "malformed token");
    CHECK(verify(token + "." + token.substr(token.rfind('.') + 1)) == "malformed token");
    CHECK(verify("") == "malformed token");
    CHECK(verify("..") == "malformed token");
    CHECK(verify("...") == "malformed token");
  }

  TEST_CASE("padding is rejected") {
    const std::string token = jwt_issue(settings(), "u", kNow);
    CHECK(verify(token + "=") == "malformed token");
    const size_t dot = token.find('.');
    const std::string header_padded = token.substr(0, dot) + "=" + token.substr(dot);
    CHECK(verify(header_padded) == "malformed token");
  }

  TEST_CASE("standard-alphabet characters are rejected") {
    // Find a token whose signature uses the URL-safe character, so its standard-base64 twin
    // carries the very same bytes and only the alphabet check can reject it.
    for (const auto& [url_safe, standard] : {std::pair{'-', '+'}, std::pair{'_', '/'}}) {
      CAPTURE(standard);
      std::string token;
      for (int i = 0; i < 1000; ++i) {
        token = jwt_issue(settings(), "user-" + std::to_string(i), kNow);
        if (token.find(url_safe, token.rfind('.')) != std::string::npos) break;
      }
      const size_t sig_start = token.rfind('.') + 1;
      REQUIRE(token.find(url_safe, sig_start) != std::string::npos);
      REQUIRE(verify(token) == "<ok>");
      std::string twin = token;
      for (size_t i = sig_start; i < twin.size(); ++i) {
        if (twin[i] == url_safe) twin[i] = standard;
      }
      CHECK(verify(twin) == "malformed token");
    }
  }

  TEST_CASE("non-canonical trailing bits are rejected") {
    const std::string token = jwt_issue(settings(), "u", kNow);
    // 32 signature bytes take 43 characters, leaving 2 unused bits in the last one.
    REQUIRE(token.size() - token.rfind('.') - 1 == 43);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char last = token.back();
    const char twin = alphabet[alphabet.find(last) | 1];
    REQUIRE(base64url_decode(std::string("AA") + twin).ok() == false);  // sanity: non-canonical
    CHECK(verify(replace_last_char(token, twin)) == "malformed token");

    // The header's 27 bytes take 36 characters: canonical, so craft a 28-byte header instead.
    const std::string header = R"({"alg":"HS256","typ":"JWT" })";
    REQUIRE(header.size() % 3 == 1);
    std::string header_b64 = base64url_encode(header);
    header_b64.back() = alphabet[alphabet.find(header_b64.back()) | 1];
    const std::string input = header_b64 + "." + base64url_encode(good_payload().dump());
    CHECK(verify(input + "." + hmac_b64(kSecret, input)) == "malformed token");
  }

  TEST_CASE("required claims must be present and well typed") {
    for (const char* claim : {"sub", "jti", "exp", "iat"}) {
      CAPTURE(claim);
      json p = good_payload();
      p.erase(claim);
      CHECK(verify(sign(p)) == std::string("missing or invalid ") + claim);
    }
    json p = good_payload();
    p["sub"] = "";
    CHECK(verify(sign(p)) == "missing or invalid sub");
    p = good_payload();
    p["sub"] = 42;
    CHECK(verify(sign(p)) == "missing or invalid sub");
    p = good_payload();
    p["jti"] = "";
    CHECK(verify(sign(p)) == "missing or invalid jti");
    p = good_payload();
    p["exp"] = std::to_string(kNow + 3600);
    CHECK(verify(sign(p)) == "missing or invalid exp");
    p = good_payload();
    p["exp"] = static_cast<double>(kNow + 3600);
    CHECK(verify(sign(p)) == "missing or invalid exp");
    p = good_payload();
    p["exp"] = std::numeric_limits<uint64_t>::max();
    CHECK(verify(sign(p)) == "missing or invalid exp");
    p = good_payload();
    p["iat"] = "yesterday";
    CHECK(verify(sign(p)) == "missing or invalid iat");
  }

  TEST_CASE("extreme timestamps do not overflow") {
    json p = good_payload();
    p["exp"] = std::numeric_limits<int64_t>::max();
    CHECK(verify(sign(p)) == "<ok>");
    p = good_payload();
    p["exp"] = std::numeric_limits<int64_t>::min();
    CHECK(verify(sign(p)) == "token expired");
    p = good_payload();
    CHECK(verify(sign(p), std::numeric_limits<int64_t>::max()) == "token expired");
  }

  TEST_CASE("payload must be a JSON object") {
    CHECK(verify(sign(kGoodHeader, "[1,2,3]")) == "malformed token");
    CHECK(verify(sign(kGoodHeader, "not json")) == "malformed token");
    CHECK(verify(sign(kGoodHeader, std::string("{\"sub\":\"\xff\"}"))) == "malformed token");
  }

  TEST_CASE("secrets shorter than 32 bytes are refused") {
    JwtSettings s = settings();
    s.secret = std::string(31, 'k');
    CHECK_THROWS_AS(static_cast<void>(jwt_issue(s, "u", kNow)), std::invalid_argument);
    // Correctly signed with that short key, and still refused.
    CHECK(outcome(jwt_verify(s, sign(kGoodHeader, good_payload().dump(), s.secret), kNow)) ==
          "token verification unavailable");
    s.secret.clear();
    CHECK_THROWS_AS(static_cast<void>(jwt_issue(s, "u", kNow)), std::invalid_argument);
    CHECK_FALSE(jwt_verify(s, sign(kGoodHeader, good_payload().dump(), s.secret), kNow).ok());
  }

  TEST_CASE("issue rejects an empty subject") {
    CHECK_THROWS_AS(static_cast<void>(jwt_issue(settings(), "", kNow)), std::invalid_argument);
  }

  TEST_CASE("huge tokens are rejected") {
    CHECK(verify(std::string(9000, 'A')) == "token too large");
    // Correctly signed, so only the size bound can reject it.
    json p = good_payload();
    p["pad"] = std::string(8000, 'x');
    const std::string big = sign(p);
    REQUIRE(big.size() > 8 * 1024);
    CHECK(verify(big) == "token too large");
    p["pad"] = std::string(5000, 'x');
    CHECK(verify(sign(p)) == "<ok>");
  }

  TEST_CASE("reasons never contain the secret") {
    const std::string token = jwt_issue(settings(), "u", kNow);
    for (const std::string& t : {token + "x", replace_last_char(token, 'A'), std::string("a.b.c")}) {
      auto r = jwt_verify(settings(), t, kNow);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == usersd::Errc::invalid);
      CHECK(r.error().message.find(kSecret) == std::string::npos);
    }
  }
}
