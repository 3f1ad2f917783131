#include "common/attempt_limiter.hpp"

#include <time.h>

#include <algorithm>

namespace usersd {
namespace {

int64_t seconds_until(int64_t until_ms, int64_t now_ms) {
  return until_ms > now_ms ? (until_ms - now_ms + 999) / 1000 : 0;
}

int64_t lockout_ms(const ThrottleRule& rule, uint32_t strikes) {
  int64_t ms = int64_t{rule.lockout_seconds} * 1000;
  const int64_t cap = int64_t{std::max(rule.max_lockout_seconds, rule.lockout_seconds)} * 1000;
  for (uint32_t i = 0; i < strikes && ms < cap; ++i) ms *= 2;
  return std::min(ms, cap);
}

}  // namespace

int64_t steady_now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

int64_t AttemptLimiter::retry_after(std::string_view key, int64_t now_ms) {
  return seconds_until(table_.read(key, now_ms).locked_until_ms, now_ms);
}

int64_t AttemptLimiter::record(std::string_view key, const ThrottleRule& rule, int64_t now_ms) {
  int64_t locked_until = 0;
  table_.update(key, now_ms, [&](CounterEntry& e) {
    const int64_t window_ms = int64_t{rule.window_seconds} * 1000;
    if (e.window_start_ms == 0 || now_ms - e.window_start_ms >= window_ms) {
      e.window_start_ms = now_ms;
      e.count = 0;
    }
    if (e.locked_until_ms <= now_ms) {
      ++e.count;
      if (e.count >= static_cast<uint32_t>(rule.max_attempts)) {
        e.locked_until_ms = now_ms + lockout_ms(rule, e.strikes);
        ++e.strikes;
        e.count = 0;
        e.window_start_ms = 0;
      }
    }
    // Strikes are remembered for a window after the lock ends, so a key that resumes at once escalates.
    e.expires_ms = std::max(now_ms + window_ms, e.locked_until_ms + window_ms);
    locked_until = e.locked_until_ms;
  });
  return seconds_until(locked_until, now_ms);
}

void AttemptLimiter::reset(std::string_view key, int64_t now_ms) {
  // Most keys reset (every successful login) were never throttled: do not take a slot for them.
  const CounterEntry current = table_.read(key, now_ms);
  if (current.count == 0 && current.strikes == 0 && current.locked_until_ms == 0) return;
  table_.update(key, now_ms, [](CounterEntry& e) {
    e.count = e.strikes = 0;
    e.window_start_ms = e.locked_until_ms = 0;
    e.expires_ms = 0;  // reusable at once
  });
}

}  // namespace usersd
