// The metrics shared memory: created by the supervisor (memfd), mapped by every worker as fd 4.
// One block of atomic counters per worker slot, so a slot's counts outlive the worker process that made
// them (a restarted or replaced worker keeps adding to its slot) and the supervisor can sum all slots.
// Everything here is plain data: std::atomic<uint64_t> is lock-free and address-free on our targets.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace usersd::metrics {

inline constexpr int kMetricsFd = 4;  // in a worker: the supervisor's memfd (fd 3 is the channel)
inline constexpr uint32_t kMagic = 0x75736d31;  // "usm1": bump when the layout changes
inline constexpr int kMaxSlots = 1024;           // = the most workers `usersd scale` allows
inline constexpr int kMaxRoutes = 32;            // route templates per slot; index 0 is "unmatched"
inline constexpr int kRouteNameBytes = 64;

inline constexpr std::string_view kMethodNames[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"};
inline constexpr int kMethods = sizeof kMethodNames / sizeof kMethodNames[0];
inline constexpr int kStatusClasses = 5;  // 1xx .. 5xx

// Histogram upper bounds in seconds; one more bucket counts everything above the last (+Inf).
inline constexpr double kLatencyBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
inline constexpr int kLatencyBuckets = sizeof kLatencyBounds / sizeof kLatencyBounds[0] + 1;

enum class StoreOp { create, find_by_id, find_by_email, list, update, put, remove, ping, find_by_user_name };
inline constexpr std::string_view kStoreOpNames[] = {"create", "find_by_id", "find_by_email", "list", "update",
                                                     "put",    "remove",     "ping",          "find_by_user_name"};
inline constexpr int kStoreOps = sizeof kStoreOpNames / sizeof kStoreOpNames[0];

using Counter = std::atomic<uint64_t>;
static_assert(Counter::is_always_lock_free, "counters in shared memory must be lock-free");

struct Histogram {
  Counter buckets[kLatencyBuckets];  // NOT cumulative: the exporter accumulates
  Counter sum_us;                    // total observed time, microseconds
};

struct SlotCounters {
  // Route templates, appended by the (single) worker starting in this slot: name first, then the count
  // (release), so a reader that loads the count (acquire) sees whole names.
  std::atomic<uint32_t> route_count;
  char route_names[kMaxRoutes][kRouteNameBytes];
  Counter requests[kMaxRoutes][kMethods][kStatusClasses];
  Histogram request_seconds[kMaxRoutes];
  Counter response_bytes;
  Counter logins_succeeded;
  Counter logins_failed;
  Counter store_errors[kStoreOps];    // the store was unavailable (not: not found, conflict...)
  Histogram store_seconds[kStoreOps];
  Counter log_lines_dropped;
};

struct Region {
  std::atomic<uint32_t> magic;
  uint32_t max_slots;
  SlotCounters slots[kMaxSlots];
};

inline constexpr size_t kRegionBytes = sizeof(Region);

// Index of the method in kMethodNames ("OTHER" for anything else).
inline int method_index(std::string_view method) {
  for (int i = 0; i < kMethods - 1; ++i) {
    if (kMethodNames[i] == method) return i;
  }
  return kMethods - 1;
}

inline int latency_bucket(double seconds) {
  for (int i = 0; i < kLatencyBuckets - 1; ++i) {
    if (seconds <= kLatencyBounds[i]) return i;
  }
  return kLatencyBuckets - 1;
}

}  // namespace usersd::metrics
