// Most cases use the cheapest policy libsodium allows for a realistic hash (8 MiB, t=1) to stay
// fast; one case exercises the production default.
#include "common/password.hpp"

#include <sodium.h>

#include <array>
#include <chrono>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

using usersd::PasswordHasher;
using usersd::PasswordPolicy;

namespace {

PasswordPolicy fast_policy() {
  PasswordPolicy p;
  p.memlimit_kib = 8 * 1024;
  p.opslimit = 1;
  p.max_concurrent = 2;
  return p;
}

// Takes tens of milliseconds to check: a thread checking it holds a gate slot long enough to be seen.
std::string deliberately_slow_hash() {
  std::array<char, crypto_pwhash_STRBYTES> slow{};
  REQUIRE(crypto_pwhash_str_alg(slow.data(), "pw", 2, 8, 8 * 1024 * 1024, crypto_pwhash_ALG_ARGON2ID13) == 0);
  return std::string(slow.data());
}

// A holder thread checks a deliberately slow hash over and over, so a one-slot gate is nearly always
// taken; we knock between its checks' starts, pausing so it gets the slot back first. True once refused.
bool refused_while_slot_is_held(PasswordHasher& hasher) {
  const std::string slow_hash = deliberately_slow_hash();
  std::atomic<bool> stop{false};
  std::thread holder([&] {
    while (!stop.load()) {
      try {
        static_cast<void>(hasher.verify(slow_hash, "pw"));
      } catch (const usersd::PasswordHasherBusy&) {
      }
    }
  });
  bool refused = false;
  for (int attempt = 0; attempt < 100 && !refused; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    try {
      static_cast<void>(hasher.verify(slow_hash, "pw"));
    } catch (const usersd::PasswordHasherBusy&) {
      refused = true;
    }
  }
  stop = true;
  holder.join();
  return refused;
}

}  // namespace

TEST_SUITE("password") {
  TEST_CASE("hash then verify") {
    PasswordHasher hasher(fast_policy());
    const std::string h = hasher.hash("correct horse battery staple");
    CHECK(h.rfind("$argon2id$", 0) == 0);
    CHECK(h.find("m=8192,t=1,p=1") != std::string::npos);
    CHECK(hasher.verify(h, "correct horse battery staple"));
    CHECK_FALSE(hasher.verify(h, "correct horse battery stapler"));
    CHECK_FALSE(hasher.verify(h, ""));
  }

  TEST_CASE("passwords are byte strings, including NUL and empty") {
    PasswordHasher hasher(fast_policy());
    const std::string with_nul("ab\0cd", 5);
    const std::string h = hasher.hash(with_nul);
    CHECK(hasher.verify(h, with_nul));
    CHECK_FALSE(hasher.verify(h, "ab"));
    const std::string empty = hasher.hash("");
    CHECK(hasher.verify(empty, ""));
    CHECK_FALSE(hasher.verify(empty, "x"));
  }

  TEST_CASE("same password hashes differently (random salt)") {
    PasswordHasher hasher(fast_policy());
    const std::string a = hasher.hash("hunter2hunter2");
    const std::string b = hasher.hash("hunter2hunter2");
    CHECK(a != b);
    CHECK(hasher.verify(a, "hunter2hunter2"));
    CHECK(hasher.verify(b, "hunter2hunter2"));
  }

  TEST_CASE("needs_rehash tracks the policy and the algorithm") {
    PasswordHasher hasher(fast_policy());
    const std::string h = hasher.hash("password123");
    CHECK_FALSE(hasher.needs_rehash(h));

    PasswordPolicy stronger = fast_policy();
    stronger.opslimit = 2;
    PasswordHasher upgraded(stronger);
    CHECK(upgraded.needs_rehash(h));
    CHECK(upgraded.verify(h, "password123"));  // old hashes still log in, then get upgraded

    PasswordPolicy bigger = fast_policy();
    bigger.memlimit_kib = 16 * 1024;
    CHECK(PasswordHasher(bigger).needs_rehash(h));

    CHECK(hasher.needs_rehash(""));
    CHECK(hasher.needs_rehash("garbage"));
    CHECK(hasher.needs_rehash("$argon2id$v=19$m=8192,t=1,p=1$"));
  }

  TEST_CASE("an argon2i hash with matching parameters still needs rehash") {
    // argon2i needs t >= 3, so both sides use t = 3.
    PasswordPolicy policy = fast_policy();
    policy.opslimit = 3;
    PasswordHasher hasher(policy);
    std::array<char, crypto_pwhash_STRBYTES> out{};
    REQUIRE(crypto_pwhash_str_alg(out.data(), "pw", 2, 3, 8 * 1024 * 1024,
                                  crypto_pwhash_ALG_ARGON2I13) == 0);
    const std::string argon2i(out.data());
    REQUIRE(argon2i.rfind("$argon2i$", 0) == 0);
    CHECK(hasher.verify(argon2i, "pw"));
    CHECK(hasher.needs_rehash(argon2i));
    CHECK_FALSE(hasher.needs_rehash(hasher.hash("pw")));
  }

  TEST_CASE("verify never accepts a garbage hash") {
    PasswordHasher hasher(fast_policy());
    const std::string h = hasher.hash("pw");
    CHECK_FALSE(hasher.verify("", "pw"));
    CHECK_FALSE(hasher.verify("garbage", "pw"));
    CHECK_FALSE(hasher.verify("$argon2id$", "pw"));
    CHECK_FALSE(hasher.verify("$argon2id$v=19$m=8192,t=1,p=1$", "pw"));
    CHECK_FALSE(hasher.verify(h.substr(0, h.size() - 5), "pw"));
    CHECK_FALSE(hasher.verify(h + std::string(1, '\0') + "junk", "pw"));
    CHECK_FALSE(hasher.verify(h + std::string(1000, 'A'), "pw"));
    CHECK_FALSE(hasher.verify(std::string(1 << 20, '$'), "pw"));
  }

  TEST_CASE("a saturated gate with a full queue refuses at once") {
    PasswordPolicy p = fast_policy();
    p.max_concurrent = 1;
    p.max_queued = 0;        // nobody may wait...
    p.max_wait_ms = 600000;  // ...so a refusal cannot come from the wait running out
    PasswordHasher hasher(p);
    CHECK(refused_while_slot_is_held(hasher));
    CHECK(hasher.verify(deliberately_slow_hash(), "pw"));  // free again afterwards
  }

  TEST_CASE("a caller that waits past max_wait_ms is refused") {
    PasswordPolicy p = fast_policy();
    p.max_concurrent = 1;
    p.max_queued = 8;
    p.max_wait_ms = 1;
    PasswordHasher hasher(p);
    // The holder keeps the one slot busy for tens of milliseconds at a time, far beyond 1 ms.
    CHECK(refused_while_slot_is_held(hasher));
  }

  TEST_CASE("verify_dummy runs") {
    PasswordHasher hasher(fast_policy());
    hasher.verify_dummy("whatever");
    hasher.verify_dummy("");
  }

  TEST_CASE("invalid policies fail at construction") {
    PasswordPolicy p = fast_policy();
    p.max_concurrent = 0;
    CHECK_THROWS_AS(PasswordHasher{p}, std::invalid_argument);
    p = fast_policy();
    p.opslimit = 0;
    CHECK_THROWS_AS(PasswordHasher{p}, std::invalid_argument);
    p = fast_policy();
    p.memlimit_kib = 4;
    CHECK_THROWS_AS(PasswordHasher{p}, std::invalid_argument);
    p = fast_policy();
    p.memlimit_kib = UINT64_MAX / 16;
    CHECK_THROWS_AS(PasswordHasher{p}, std::invalid_argument);
  }

  TEST_CASE("concurrent callers all succeed through the gate") {
    PasswordHasher hasher(fast_policy());  // max_concurrent = 2
    constexpr int kThreads = 8;
    std::vector<std::string> hashes(kThreads);
    std::vector<char> verified(kThreads, 0);
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < kThreads; ++i) {
        threads.emplace_back([&, i] {
          const std::string pw = "password-" + std::to_string(i);
          hashes[i] = hasher.hash(pw);
          verified[i] = hasher.verify(hashes[i], pw) ? 1 : 0;
          hasher.verify_dummy(pw);
        });
      }
    }
    for (int i = 0; i < kThreads; ++i) {
      CAPTURE(i);
      CHECK(verified[i] == 1);
      CHECK(hasher.verify(hashes[i], "password-" + std::to_string(i)));
      CHECK_FALSE(hasher.verify(hashes[i], "password-" + std::to_string((i + 1) % kThreads)));
    }
  }

  TEST_CASE("default OWASP policy") {
    PasswordHasher hasher(PasswordPolicy{});
    const std::string h = hasher.hash("a reasonable passphrase");
    CHECK(h.rfind("$argon2id$v=19$m=19456,t=2,p=1$", 0) == 0);
    CHECK(hasher.verify(h, "a reasonable passphrase"));
    CHECK_FALSE(hasher.verify(h, "a reasonable passphrasE"));
    CHECK_FALSE(hasher.needs_rehash(h));
  }
}
