// Throttling repeated attempts (failed logins, registrations) per key, on the shared counter table:
// after max_attempts within window_seconds the key is locked for lockout_seconds, doubling with each
// further lockout (up to max_lockout_seconds) while the key keeps misbehaving.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/shared_counter_table.hpp"

namespace usersd {

struct ThrottleRule {
  int max_attempts = 5;
  int window_seconds = 900;
  int lockout_seconds = 60;
  int max_lockout_seconds = 3600;
};

// Milliseconds on CLOCK_MONOTONIC: one clock for every process on the host, immune to wall-clock steps.
int64_t steady_now_ms();

class AttemptLimiter {
 public:
  explicit AttemptLimiter(SharedCounterTable& table) : table_(table) {}

  // Seconds until the key may try again (rounded up); 0 when it may try now.
  int64_t retry_after(std::string_view key, int64_t now_ms);
  // Counts one attempt; returns retry_after() as it stands afterwards.
  int64_t record(std::string_view key, const ThrottleRule& rule, int64_t now_ms);
  // Forgets the key's attempts and lockouts (a successful login clears its account's failures).
  void reset(std::string_view key, int64_t now_ms);

 private:
  SharedCounterTable& table_;
};

}  // namespace usersd
