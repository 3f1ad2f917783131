// bcrypt verification by libxcrypt, never by code of our own: the system library is the implementation
// that is reviewed and patched. Output compared with sodium_memcmp so the time does not depend on how
// many leading characters match.
#include "common/legacy_bcrypt.hpp"

#include <crypt.h>
#include <sodium.h>

#include <algorithm>
#include <memory>
#include <string>

namespace usersd {
namespace {

constexpr size_t kBcryptLength = 60;  // "$2b$" + "10" + "$" + 22 salt + 31 hash chars

bool bcrypt_alphabet(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '/';
}

}  // namespace

bool is_bcrypt_hash(std::string_view hash) {
  if (hash.size() != kBcryptLength) return false;
  if (!(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))) return false;
  if (hash[4] < '0' || hash[4] > '9' || hash[5] < '0' || hash[5] > '9' || hash[6] != '$') return false;
  const int cost = (hash[4] - '0') * 10 + (hash[5] - '0');
  if (cost < kBcryptMinCost || cost > kBcryptMaxCost) return false;
  return std::all_of(hash.begin() + 7, hash.end(), bcrypt_alphabet);
}

bool bcrypt_verify(std::string_view hash, std::string_view password) {
  if (!is_bcrypt_hash(hash) || password.find('\0') != std::string_view::npos) return false;
  const std::string setting(hash);
  const std::string phrase(password);
  // struct crypt_data is ~32 KiB: too large for a worker thread's stack, so it lives on the heap.
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), static_cast<int>(sizeof(crypt_data)));
  bool match = false;
  if (out != nullptr && out[0] != '*') {
    const std::string_view computed(out);
    match = computed.size() == hash.size() && sodium_memcmp(computed.data(), hash.data(), hash.size()) == 0;
  }
  sodium_memzero(data.get(), sizeof(crypt_data));  // it held the password and intermediate state
  return match;
}

}  // namespace usersd
