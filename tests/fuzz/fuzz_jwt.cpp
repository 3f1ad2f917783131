// libFuzzer: JWT verification of arbitrary tokens (header/payload/signature parsing, base64url,
// claims), and the base64url codec round trip. Without the secret no input may verify, except the
// seed tokens this target signs itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/jwt.hpp"

namespace {

const usersd::JwtSettings& settings() {
  static const usersd::JwtSettings s{"fuzz-secret-0123456789abcdef0123456789", "usersd", "usersd", 3600, 30};
  return s;
}

constexpr int64_t kNow = 1'700'000'000;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto verified = usersd::jwt_verify(settings(), text, kNow);
  if (verified) {
    // Only a token signed with our secret verifies (the seeds): its claims must then be complete and live.
    const auto& claims = verified.value();
    if (claims.sub.empty() || claims.exp <= kNow - settings().leeway_seconds) std::abort();
  }
  const std::string encoded = usersd::base64url_encode(text);
  auto decoded = usersd::base64url_decode(encoded);
  if (!decoded || decoded.value() != text) std::abort();
  if (auto raw = usersd::base64url_decode(text); raw && usersd::base64url_encode(raw.value()) != text) {
    std::abort();  // the decoder accepted a non-canonical encoding
  }
  return 0;
}
