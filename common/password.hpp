// Password hashing with Argon2id (libsodium crypto_pwhash_str), with bounded concurrency:
// each hash holds memlimit bytes, so a login storm must queue instead of exhausting memory.
// Legacy bcrypt hashes imported from the Node.js service verify too (common/legacy_bcrypt), but every
// hash this class makes is Argon2id, and needs_rehash says yes to anything else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace usersd {

struct PasswordPolicy {
  uint64_t memlimit_kib = 19 * 1024;  // OWASP: >= 19 MiB
  uint64_t opslimit = 2;              // OWASP: t = 2
  unsigned max_concurrent = 2;        // hashes running at once in this process
  size_t min_length = 8;
  size_t max_length = 128;
};

class PasswordHasher {
 public:
  explicit PasswordHasher(PasswordPolicy policy);
  ~PasswordHasher();
  PasswordHasher(const PasswordHasher&) = delete;
  PasswordHasher& operator=(const PasswordHasher&) = delete;

  const PasswordPolicy& policy() const { return policy_; }
  // Returns an "$argon2id$..." encoded string. Throws std::runtime_error only when out of memory.
  std::string hash(std::string_view password);
  // Argon2id/Argon2i (libsodium) or legacy bcrypt ($2a$/$2b$/$2y$). A hash of neither kind (e.g. the empty
  // hash of an imported account that has no password yet) never matches.
  // Every failure costs one Argon2id and one bcrypt computation, whatever the stored hash: so a wrong
  // password for a not-yet-upgraded legacy account, for an upgraded one, and an unknown email
  // (verify_dummy) all take the same time, and timing cannot tell which emails are legacy accounts.
  bool verify(std::string_view encoded_hash, std::string_view password);
  // What a failed verify costs, for an unknown email.
  void verify_dummy(std::string_view password);
  // True when the hash was made with other parameters than the current policy.
  bool needs_rehash(std::string_view encoded_hash) const;

 private:
  struct Gate;
  void argon2_dummy(std::string_view password);
  void bcrypt_dummy(std::string_view password);
  PasswordPolicy policy_;
  std::unique_ptr<Gate> gate_;
  std::string dummy_hash_;
};

}  // namespace usersd
