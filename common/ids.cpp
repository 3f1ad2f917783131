#include "common/ids.hpp"

#include <sodium.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <ctime>

namespace usersd {
namespace {

struct ProcessNonce {
  pid_t pid = 0;
  unsigned char bytes[5] = {};
};

// Random per thread and re-drawn after fork (the pid check), so no two workers or threads share it.
const ProcessNonce& process_nonce() {
  static thread_local ProcessNonce nonce;
  if (nonce.pid != getpid()) {
    if (sodium_init() < 0) std::abort();
    randombytes_buf(nonce.bytes, sizeof nonce.bytes);
    nonce.pid = getpid();
  }
  return nonce;
}

std::atomic<uint32_t> counter{0};

}  // namespace

std::string new_object_id() {
  static const char* hex = "0123456789abcdef";
  unsigned char raw[12];
  const auto seconds = static_cast<uint32_t>(std::time(nullptr));
  raw[0] = seconds >> 24;
  raw[1] = seconds >> 16;
  raw[2] = seconds >> 8;
  raw[3] = seconds;
  const auto& nonce = process_nonce();
  for (int i = 0; i < 5; ++i) raw[4 + i] = nonce.bytes[i];
  static thread_local bool seeded = false;
  if (!seeded) {
    counter.fetch_add(randombytes_uniform(1u << 24));
    seeded = true;
  }
  const uint32_t n = counter.fetch_add(1);
  raw[9] = n >> 16;
  raw[10] = n >> 8;
  raw[11] = n;
  std::string out(24, '0');
  for (int i = 0; i < 12; ++i) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 0xf];
  }
  return out;
}

bool is_object_id(std::string_view text) {
  if (text.size() != 24) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace usersd
