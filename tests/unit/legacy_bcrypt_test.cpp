// Legacy bcrypt verification. Every hash here is made by libxcrypt itself (crypt_gensalt_rn + crypt_rn),
// the way the Node.js service's bcrypt made them, so the test does not trust our own parsing to build them.
#include "common/legacy_bcrypt.hpp"

#include <crypt.h>

#include <array>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include "common/password.hpp"

namespace {

std::string libcrypt_hash(const char* prefix, unsigned long cost, const std::string& password) {
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> setting{};
  // rbytes = nullptr: libxcrypt draws the salt from the OS itself.
  REQUIRE(crypt_gensalt_rn(prefix, cost, nullptr, 0, setting.data(), static_cast<int>(setting.size())) != nullptr);
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(password.c_str(), setting.data(), data.get(), static_cast<int>(sizeof(crypt_data)));
  REQUIRE(out != nullptr);
  return out;
}

usersd::PasswordPolicy fast_policy() {
  usersd::PasswordPolicy p;
  p.memlimit_kib = 8 * 1024;
  p.opslimit = 1;
  return p;
}

}  // namespace

TEST_SUITE("password") {
  TEST_CASE("bcrypt hashes made by libcrypt verify, at the old service's cost 10") {
    const std::string hash = libcrypt_hash("$2b$", 10, "old password 1");
    CHECK(hash.rfind("$2b$10$", 0) == 0);
    CHECK(hash.size() == 60);
    CHECK(usersd::is_bcrypt_hash(hash));
    CHECK(usersd::bcrypt_verify(hash, "old password 1"));
    CHECK_FALSE(usersd::bcrypt_verify(hash, "old password 2"));
    CHECK_FALSE(usersd::bcrypt_verify(hash, ""));
  }

  TEST_CASE("the $2a$ and $2y$ variants verify too") {
    for (const char* prefix : {"$2a$", "$2y$"}) {
      CAPTURE(prefix);
      const std::string hash = libcrypt_hash(prefix, 4, "s3cret-pässword");
      CHECK(hash.rfind(prefix, 0) == 0);
      CHECK(usersd::bcrypt_verify(hash, "s3cret-pässword"));
      CHECK_FALSE(usersd::bcrypt_verify(hash, "s3cret-password"));
    }
  }

  TEST_CASE("malformed or out-of-policy hashes are not bcrypt and never verify") {
    const std::string good = libcrypt_hash("$2b$", 4, "pw");
    std::string tampered = good;
    tampered.back() = tampered.back() == 'a' ? 'b' : 'a';
    CHECK(usersd::is_bcrypt_hash(tampered));
    CHECK_FALSE(usersd::bcrypt_verify(tampered, "pw"));
    CHECK_FALSE(usersd::is_bcrypt_hash(good.substr(0, 59)));
    CHECK_FALSE(usersd::is_bcrypt_hash("$2x$" + good.substr(4)));          // unknown variant
    CHECK_FALSE(usersd::is_bcrypt_hash("$2b$31$" + good.substr(7)));       // cost 31: refused, not run
    CHECK_FALSE(usersd::is_bcrypt_hash("$2b$03$" + good.substr(7)));
    CHECK_FALSE(usersd::is_bcrypt_hash(good.substr(0, 20) + "!" + good.substr(21)));
    CHECK_FALSE(usersd::is_bcrypt_hash(""));
    CHECK_FALSE(usersd::bcrypt_verify(good, std::string("pw\0tail", 7)));  // C strings would truncate at NUL
  }

  TEST_CASE("PasswordHasher verifies legacy bcrypt, always asks to rehash it, and never makes bcrypt") {
    usersd::PasswordHasher hasher(fast_policy());
    const std::string legacy = libcrypt_hash("$2b$", 4, "correct horse");
    CHECK(hasher.verify(legacy, "correct horse"));
    CHECK_FALSE(hasher.verify(legacy, "wrong horse"));
    CHECK(hasher.needs_rehash(legacy));
    const std::string fresh = hasher.hash("correct horse");
    CHECK(fresh.rfind("$argon2id$", 0) == 0);
    CHECK_FALSE(hasher.needs_rehash(fresh));
  }

  TEST_CASE("an account without a usable hash never logs in") {
    usersd::PasswordHasher hasher(fast_policy());
    CHECK_FALSE(hasher.verify("", ""));
    CHECK_FALSE(hasher.verify("", "anything at all"));
    CHECK_FALSE(hasher.verify("plaintext-password", "plaintext-password"));
    CHECK(hasher.needs_rehash(""));
  }
}
