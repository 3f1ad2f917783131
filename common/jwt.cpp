// HS256 JWTs. Verification fails closed: every field is checked against an exact expectation,
// and the payload is not even parsed until the signature over it has been checked.
#include "common/jwt.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace usersd {
namespace {

using nlohmann::json;

constexpr size_t kMinSecretBytes = 32;
// Tokens arrive in request headers; bounding them caps the parsing work an attacker can demand.
constexpr size_t kMaxTokenBytes = 8 * 1024;
constexpr size_t kJtiBytes = 16;
// A fixed string rather than a serialized object, so the signed bytes never depend on key order.
constexpr std::string_view kHeader = R"({"alg":"HS256","typ":"JWT"})";
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

using Mac = std::array<unsigned char, crypto_auth_hmacsha256_BYTES>;

Error invalid(std::string reason) { return Error{Errc::invalid, std::move(reason)}; }

int decode_char(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string_view as_chars(const Mac& mac) {
  return {reinterpret_cast<const char*>(mac.data()), mac.size()};
}

// The multi-part API accepts keys of any length (long keys are hashed first, per RFC 2104);
// the one-shot crypto_auth_hmacsha256 insists on exactly 32 bytes.
Mac hmac_sha256(std::string_view key, std::string_view message) {
  crypto_auth_hmacsha256_state state;
  Mac mac{};
  crypto_auth_hmacsha256_init(&state, bytes_of(key), key.size());
  crypto_auth_hmacsha256_update(&state, bytes_of(message), message.size());
  crypto_auth_hmacsha256_final(&state, mac.data());
  sodium_memzero(&state, sizeof state);  // it holds the key-derived pads
  return mac;
}

int64_t saturating_add(int64_t a, int64_t b) {
  if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) return std::numeric_limits<int64_t>::max();
  if (b < 0 && a < std::numeric_limits<int64_t>::min() - b) return std::numeric_limits<int64_t>::min();
  return a + b;
}

// nlohmann keeps the last of duplicate keys, while other parsers may keep the first; a token
// that two parsers read differently is an attack vector (e.g. two "alg"), so refuse it outright.
std::optional<json> parse_object(std::string_view text) {
  std::vector<std::set<std::string>> keys_by_depth;
  bool duplicate = false;
  auto track_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys_by_depth.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys_by_depth.pop_back();
    } else if (event == json::parse_event_t::key && !keys_by_depth.empty()) {
      if (!keys_by_depth.back().insert(parsed.get<std::string>()).second) duplicate = true;
    }
    return true;
  };
  try {
    json value = json::parse(text.begin(), text.end(), track_keys);
    if (duplicate || !value.is_object()) return std::nullopt;
    return value;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::optional<json> decode_json_part(std::string_view part) {
  auto decoded = base64url_decode(part);
  if (!decoded) return std::nullopt;
  return parse_object(decoded.value());
}

// Only genuine JSON integers that fit int64 count; 1.7e9, "1700000000" and 2^64-1 do not.
std::optional<int64_t> int_claim(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end() || !it->is_number_integer()) return std::nullopt;
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  return it->get<int64_t>();
}

std::optional<std::string> nonempty_string_claim(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end() || !it->is_string()) return std::nullopt;
  auto value = it->get<std::string>();
  if (value.empty()) return std::nullopt;
  return value;
}

bool audience_matches(const json& payload, const std::string& audience) {
  auto it = payload.find("aud");
  if (it == payload.end()) return false;
  if (it->is_string()) return it->get_ref<const std::string&>() == audience;
  if (!it->is_array()) return false;
  for (const auto& entry : *it) {
    if (entry.is_string() && entry.get_ref<const std::string&>() == audience) return true;
  }
  return false;
}

Status check_header(const json& header) {
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string() || alg->get_ref<const std::string&>() != "HS256") {
    return invalid("unsupported algorithm");
  }
  auto typ = header.find("typ");
  if (typ != header.end() && (!typ->is_string() || typ->get_ref<const std::string&>() != "JWT")) {
    return invalid("unsupported token type");
  }
  // "crit" demands we understand extensions we don't; the others name keys we'd never trust.
  for (const char* name : {"crit", "jku", "jwk", "x5u", "x5c"}) {
    if (header.contains(name)) return invalid("unsupported header");
  }
  return ok_status();
}

Result<JwtClaims> check_claims(const JwtSettings& settings, const json& payload, int64_t now) {
  auto iss = payload.find("iss");
  if (iss == payload.end() || !iss->is_string() || iss->get_ref<const std::string&>() != settings.issuer) {
    return invalid("wrong issuer");
  }
  if (!audience_matches(payload, settings.audience)) return invalid("wrong audience");

  const int64_t leeway = std::max<int64_t>(settings.leeway_seconds, 0);
  auto exp = int_claim(payload, "exp");
  if (!exp) return invalid("missing or invalid exp");
  if (now > saturating_add(*exp, leeway)) return invalid("token expired");
  auto iat = int_claim(payload, "iat");
  if (!iat) return invalid("missing or invalid iat");
  if (*iat > saturating_add(now, leeway)) return invalid("token not yet valid");
  if (payload.contains("nbf")) {
    auto nbf = int_claim(payload, "nbf");
    if (!nbf) return invalid("missing or invalid nbf");
    if (*nbf > saturating_add(now, leeway)) return invalid("token not yet valid");
  }

  auto sub = nonempty_string_claim(payload, "sub");
  if (!sub) return invalid("missing or invalid sub");
  auto jti = nonempty_string_claim(payload, "jti");
  if (!jti) return invalid("missing or invalid jti");
  return JwtClaims{std::move(*sub), std::move(*jti), *iat, *exp};
}

}  // namespace

std::string jwt_issue(const JwtSettings& settings, std::string_view subject, int64_t now_seconds) {
  if (settings.secret.size() < kMinSecretBytes) {
    throw std::invalid_argument("jwt secret must be at least 32 bytes");
  }
  if (subject.empty()) throw std::invalid_argument("jwt subject must not be empty");
  if (settings.ttl_seconds <= 0) throw std::invalid_argument("jwt ttl must be positive");
  // Idempotent and thread-safe; needed before randombytes_buf is trusted.
  if (sodium_init() < 0) throw std::runtime_error("libsodium initialisation failed");

  std::array<unsigned char, kJtiBytes> jti{};
  randombytes_buf(jti.data(), jti.size());

  json payload = json::object();
  payload["iss"] = settings.issuer;
  payload["aud"] = settings.audience;
  payload["sub"] = std::string(subject);
  payload["iat"] = now_seconds;
  payload["exp"] = saturating_add(now_seconds, settings.ttl_seconds);
  payload["jti"] = base64url_encode({reinterpret_cast<const char*>(jti.data()), jti.size()});

  std::string token = base64url_encode(kHeader) + '.' + base64url_encode(payload.dump());
  const Mac mac = hmac_sha256(settings.secret, token);
  token += '.';
  token += base64url_encode(as_chars(mac));
  return token;
}

Result<JwtClaims> jwt_verify(const JwtSettings& settings, std::string_view token, int64_t now_seconds) {
  // A short key would make every token forgeable by brute force, so refuse to vouch for any.
  if (settings.secret.size() < kMinSecretBytes) return invalid("token verification unavailable");
  if (token.size() > kMaxTokenBytes) return invalid("token too large");

  const size_t first_dot = token.find('.');
  if (first_dot == std::string_view::npos) return invalid("malformed token");
  const size_t second_dot = token.find('.', first_dot + 1);
  if (second_dot == std::string_view::npos || token.find('.', second_dot + 1) != std::string_view::npos) {
    return invalid("malformed token");
  }
  const std::string_view header_part = token.substr(0, first_dot);
  const std::string_view payload_part = token.substr(first_dot + 1, second_dot - first_dot - 1);
  const std::string_view signature_part = token.substr(second_dot + 1);

  // The header is inspected before the signature only to refuse anything but HS256; nothing
  // in it (kid, jwk, ...) is ever used to choose the key.
  auto header = decode_json_part(header_part);
  if (!header) return invalid("malformed token");
  if (auto status = check_header(*header); !status) return status.error();

  auto signature = base64url_decode(signature_part);
  if (!signature) return invalid("malformed token");
  if (signature.value().size() != crypto_auth_hmacsha256_BYTES) return invalid("bad signature");
  const Mac expected = hmac_sha256(settings.secret, token.substr(0, second_dot));
  if (sodium_memcmp(expected.data(), signature.value().data(), expected.size()) != 0) {
    return invalid("bad signature");
  }

  auto payload = decode_json_part(payload_part);
  if (!payload) return invalid("malformed token");
  return check_claims(settings, *payload, now_seconds);
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
    out += kAlphabet[v >> 6 & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const uint32_t v = byte(i) << 16;
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
  } else if (rest == 2) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
    out += kAlphabet[v >> 6 & 63];
  }
  return out;
}

Result<std::string> base64url_decode(std::string_view text) {
  // One leftover character carries only 6 bits, never a whole byte.
  if (text.size() % 4 == 1) return invalid("malformed base64url");
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = decode_char(c);
    if (v < 0) return invalid("malformed base64url");
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(acc >> bits & 0xFF);
      acc &= (1u << bits) - 1;
    }
  }
  // Non-zero unused bits would let several strings decode to the same bytes (token malleability).
  if (acc != 0) return invalid("malformed base64url");
  return out;
}

}  // namespace usersd
