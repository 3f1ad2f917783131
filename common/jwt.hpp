// JSON Web Tokens, HS256 only (RFC 7519 / RFC 8725), built on libsodium's HMAC-SHA-256.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace usersd {

struct JwtSettings {
  std::string secret;     // raw key bytes, at least 32
  std::string issuer;     // "iss" set and required
  std::string audience;   // "aud" set and required
  int64_t ttl_seconds = 3600;
  int64_t leeway_seconds = 30;  // clock skew tolerated on exp / iat
};

struct JwtClaims {
  std::string sub;   // user id
  std::string jti;   // random, 128 bits, base64url
  int64_t iat = 0;   // seconds since epoch
  int64_t exp = 0;
};

// Signs a token for `subject` issued at `now_seconds`.
std::string jwt_issue(const JwtSettings& settings, std::string_view subject, int64_t now_seconds);

// Verifies signature (constant time), header {"alg":"HS256"} exactly (typ optional, must be "JWT"),
// iss, aud (string or array containing it), exp, iat, sub, jti.
// Errc::invalid with a short reason that is safe to show a client.
Result<JwtClaims> jwt_verify(const JwtSettings& settings, std::string_view token, int64_t now_seconds);

std::string base64url_encode(std::string_view bytes);
// Strict: no padding, only the URL-safe alphabet, canonical trailing bits.
Result<std::string> base64url_decode(std::string_view text);

}  // namespace usersd
