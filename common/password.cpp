// Argon2id password hashing. Every Argon2 call passes through the Gate, because each one holds
// memlimit bytes for its whole duration and an unbounded login storm would exhaust memory.
#include "common/password.hpp"

#include "common/legacy_bcrypt.hpp"

#include <sodium.h>

#include <array>
#include <cstddef>
#include <optional>
#include <semaphore>
#include <stdexcept>

namespace usersd {
namespace {

// libsodium reads encoded hashes as NUL-terminated strings of at most STRBYTES bytes.
using EncodedHash = std::array<char, crypto_pwhash_STRBYTES>;

size_t memlimit_bytes(const PasswordPolicy& policy) {
  return static_cast<size_t>(policy.memlimit_kib) * 1024;
}

// Rejecting policies here means a bad config fails at startup, not on the first login.
void validate(const PasswordPolicy& policy) {
  if (policy.max_concurrent == 0) {
    throw std::invalid_argument("password policy: max_concurrent must be at least 1");
  }
  if (policy.opslimit < crypto_pwhash_argon2id_opslimit_min() ||
      policy.opslimit > crypto_pwhash_argon2id_opslimit_max()) {
    throw std::invalid_argument("password policy: opslimit out of range");
  }
  if (policy.memlimit_kib > crypto_pwhash_argon2id_memlimit_max() / 1024 ||
      memlimit_bytes(policy) < crypto_pwhash_argon2id_memlimit_min()) {
    throw std::invalid_argument("password policy: memlimit out of range");
  }
}

// Copies into the fixed buffer libsodium's prototype promises it may read, which also bounds
// the work a corrupt stored hash can cause (Argon2's decoder allocates by string length).
std::optional<EncodedHash> to_encoded(std::string_view text) {
  if (text.size() >= crypto_pwhash_STRBYTES || text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  EncodedHash out{};
  text.copy(out.data(), text.size());
  return out;
}

// Empty views may carry a null data(); libsodium accepts that, but a real pointer is simpler
// to reason about.
const char* password_ptr(std::string_view password) { return password.empty() ? "" : password.data(); }

}  // namespace

struct PasswordHasher::Gate {
  explicit Gate(unsigned slots) : free(static_cast<std::ptrdiff_t>(slots)) {}
  std::counting_semaphore<> free;

  // Held for exactly one Argon2 computation.
  class Slot {
   public:
    explicit Slot(Gate& gate) : gate_(gate) { gate_.free.acquire(); }
    ~Slot() { gate_.free.release(); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    Gate& gate_;
  };
};

PasswordHasher::PasswordHasher(PasswordPolicy policy) : policy_(policy) {
  validate(policy_);
  if (sodium_init() < 0) throw std::runtime_error("libsodium initialisation failed");
  gate_ = std::make_unique<Gate>(policy_.max_concurrent);

  // Made with the live policy so a dummy verify costs exactly what a real one does.
  std::array<char, 32> secret{};
  randombytes_buf(secret.data(), secret.size());
  dummy_hash_ = hash({secret.data(), secret.size()});
  sodium_memzero(secret.data(), secret.size());
}

PasswordHasher::~PasswordHasher() = default;

std::string PasswordHasher::hash(std::string_view password) {
  EncodedHash out{};
  int rc = 0;
  {
    Gate::Slot slot(*gate_);
    rc = crypto_pwhash_str_alg(out.data(), password_ptr(password), password.size(), policy_.opslimit,
                               memlimit_bytes(policy_), crypto_pwhash_ALG_ARGON2ID13);
  }
  // The policy was validated up front, so the only remaining failure is allocation.
  if (rc != 0) throw std::runtime_error("password hashing failed: out of memory");
  return std::string(out.data());
}

bool PasswordHasher::verify(std::string_view encoded_hash, std::string_view password) {
  if (is_bcrypt_hash(encoded_hash)) {
    bool match = false;
    {
      // bcrypt is CPU-bound rather than memory-bound, but still one slot: the gate bounds hashing work.
      Gate::Slot slot(*gate_);
      match = bcrypt_verify(encoded_hash, password);
    }
    if (!match) argon2_dummy(password);
    return match;
  }
  const auto encoded = to_encoded(encoded_hash);
  if (!encoded || !encoded_hash.starts_with("$argon2")) {
    // No usable hash: spend what a real check spends, so "no password set" looks like "wrong password".
    verify_dummy(password);
    return false;
  }
  bool match = false;
  {
    Gate::Slot slot(*gate_);
    match = crypto_pwhash_str_verify(encoded->data(), password_ptr(password), password.size()) == 0;
  }
  if (!match) bcrypt_dummy(password);
  return match;
}

void PasswordHasher::verify_dummy(std::string_view password) {
  argon2_dummy(password);
  bcrypt_dummy(password);
}

// The results of the two dummies are meaningless; only the time spent matters.
void PasswordHasher::argon2_dummy(std::string_view password) {
  const auto encoded = to_encoded(dummy_hash_);
  Gate::Slot slot(*gate_);
  const int ignored = crypto_pwhash_str_verify(encoded->data(), password_ptr(password), password.size());
  static_cast<void>(ignored);
}

void PasswordHasher::bcrypt_dummy(std::string_view password) {
  // A fixed hash at the Node.js service's cost (10), of a random string nobody knows; a constant, so usersd
  // never creates a bcrypt hash, not even this one.
  static constexpr std::string_view kDummyBcrypt = "$2b$10$8zAOCdsOgijwHfN.4Dymauk9kMpo7BnKuH.QP0VgBWCylrhqgiULq";
  Gate::Slot slot(*gate_);
  static_cast<void>(bcrypt_verify(kDummyBcrypt, password));
}

bool PasswordHasher::needs_rehash(std::string_view encoded_hash) const {
  // The generic crypto_pwhash_str_needs_rehash says "no" for an argon2i hash with matching
  // parameters, so the algorithm is pinned explicitly.
  const auto encoded = to_encoded(encoded_hash);
  if (!encoded || !encoded_hash.starts_with(crypto_pwhash_argon2id_STRPREFIX)) return true;
  return crypto_pwhash_argon2id_str_needs_rehash(encoded->data(), policy_.opslimit,
                                                 memlimit_bytes(policy_)) != 0;
}

}  // namespace usersd
