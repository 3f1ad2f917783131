// The shared counter table and the throttling built on it. Times are passed in, so no test sleeps.
#include "common/attempt_limiter.hpp"
#include "common/shared_counter_table.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <variant>

#include <doctest/doctest.h>

using usersd::AttemptLimiter;
using usersd::CounterEntry;
using usersd::SharedCounterTable;
using usersd::ThrottleRule;

namespace {

constexpr int64_t kT0 = 1'000'000;

// Built by append: GCC 12 warns falsely (-Wrestrict) on "literal" + std::to_string(i).
std::string key(const char* prefix, int i) {
  std::string k = prefix;
  k += std::to_string(i);
  return k;
}

ThrottleRule rule(int max, int window, int lockout, int max_lockout) { return {max, window, lockout, max_lockout}; }

}  // namespace

TEST_SUITE("limits") {
  TEST_CASE("a key is locked after max attempts, refused while locked, and the lock expires") {
    auto table = SharedCounterTable::create_private(1024);
    AttemptLimiter limiter(table);
    const auto r = rule(3, 60, 10, 100);
    CHECK(limiter.record("k", r, kT0) == 0);
    CHECK(limiter.record("k", r, kT0 + 1) == 0);
    CHECK(limiter.retry_after("k", kT0 + 2) == 0);
    CHECK(limiter.record("k", r, kT0 + 2) == 10);
    CHECK(limiter.retry_after("k", kT0 + 3) == 10);      // rounded up
    CHECK(limiter.retry_after("k", kT0 + 9'500) == 1);
    CHECK(limiter.retry_after("k", kT0 + 10'002) == 0);  // expired
    CHECK(limiter.retry_after("other", kT0) == 0);
  }

  TEST_CASE("lockouts double while the key keeps failing, up to the cap") {
    auto table = SharedCounterTable::create_private(1024);
    AttemptLimiter limiter(table);
    const auto r = rule(2, 60, 10, 35);
    int64_t now = kT0;
    int64_t expected[] = {10, 20, 35, 35};
    for (int64_t lock : expected) {
      limiter.record("k", r, now);
      CHECK(limiter.record("k", r, now) == lock);
      now += lock * 1000;  // wait the lock out, then fail again at once
    }
  }

  TEST_CASE("attempts outside the window start a new count") {
    auto table = SharedCounterTable::create_private(1024);
    AttemptLimiter limiter(table);
    const auto r = rule(3, 60, 10, 10);
    limiter.record("k", r, kT0);
    limiter.record("k", r, kT0 + 1);
    CHECK(limiter.record("k", r, kT0 + 61'000) == 0);  // a fresh window: 1 of 3
    CHECK(limiter.record("k", r, kT0 + 61'001) == 0);
    CHECK(limiter.record("k", r, kT0 + 61'002) == 10);
  }

  TEST_CASE("reset forgets failures and lockouts") {
    auto table = SharedCounterTable::create_private(1024);
    AttemptLimiter limiter(table);
    const auto r = rule(2, 60, 10, 10);
    limiter.record("k", r, kT0);
    limiter.reset("k", kT0 + 1);
    CHECK(limiter.record("k", r, kT0 + 2) == 0);
    limiter.reset("never-seen", kT0);
    CHECK(limiter.retry_after("never-seen", kT0) == 0);
  }

  TEST_CASE("memory is bounded: a flood of keys evicts, never grows, and live locks mostly survive") {
    auto table = SharedCounterTable::create_private(SharedCounterTable::kMinCapacity);
    AttemptLimiter limiter(table);
    const auto slow = rule(1, 3600, 3600, 3600);
    CHECK(limiter.record("victim-lock", slow, kT0) == 3600);
    const auto r = rule(100, 1, 1, 1);
    for (int i = 0; i < 10'000; ++i) limiter.record(key("flood-", i), r, kT0 + i);
    CHECK(table.capacity() == SharedCounterTable::kMinCapacity);
    CHECK(table.evictions() > 0);
    // Flood entries expire within a second; the hour-long lock is the last thing evicted.
    CHECK(limiter.retry_after("victim-lock", kT0 + 10'000) > 3000);
  }

  TEST_CASE("expired entries are reused without eviction") {
    auto table = SharedCounterTable::create_private(SharedCounterTable::kMinCapacity);
    AttemptLimiter limiter(table);
    const auto r = rule(100, 1, 1, 1);
    for (int i = 0; i < 5'000; ++i) limiter.record(key("k", i), r, kT0 + int64_t{i} * 2'000);
    CHECK(table.evictions() == 0);
  }

  TEST_CASE("a memfd table is shared with another process") {
    auto made = SharedCounterTable::create_memfd(256);
    REQUIRE(std::holds_alternative<int>(made));
    const int fd = std::get<int>(made);
    auto mine = SharedCounterTable::attach(fd);
    REQUIRE(std::holds_alternative<SharedCounterTable>(mine));
    const pid_t child = fork();
    if (child == 0) {
      auto theirs = SharedCounterTable::attach(fd);
      if (!std::holds_alternative<SharedCounterTable>(theirs)) _exit(2);
      AttemptLimiter limiter(std::get<SharedCounterTable>(theirs));
      for (int i = 0; i < 3; ++i) limiter.record("shared", rule(3, 60, 30, 30), kT0);
      _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    AttemptLimiter limiter(std::get<SharedCounterTable>(mine));
    CHECK(limiter.retry_after("shared", kT0 + 1) == 30);
    close(fd);
  }

  TEST_CASE("attach refuses what is not a table") {
    auto made = SharedCounterTable::create_memfd(256);
    REQUIRE(std::holds_alternative<int>(made));
    const int fd = std::get<int>(made);
    int pipe_fds[2];
    REQUIRE(pipe(pipe_fds) == 0);
    CHECK(std::holds_alternative<std::string>(SharedCounterTable::attach(pipe_fds[0])));
    CHECK(std::holds_alternative<std::string>(SharedCounterTable::attach(-1)));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(fd);
    CHECK(std::holds_alternative<std::string>(SharedCounterTable::create_memfd(1)));
  }
}
