// A fixed-size table of counters in shared memory, so abuse limits hold across all workers of one
// instance (a per-worker limit multiplied by N workers is no limit) and survive worker restarts.
// The supervisor creates it once (a sealed memfd) and every worker maps the same pages.
//
// Open addressing: a key's keyed hash picks a home slot; the key lives within kProbeWindow slots of it.
// Memory is bounded by construction: when the window is full, expired entries are reused first, then
// the entry closest to expiry is evicted. One process-shared robust mutex guards the table (operations
// are a few dozen loads and stores); a worker killed while holding it cannot wedge the others.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>

namespace usersd {

// Where a supervised worker finds the table's memfd (fd 3 is the supervisor channel, fd 4 metrics).
inline constexpr int kLimitsTableFd = 5;

// One key's state. What the fields mean is up to the caller (see attempt_limiter.hpp); the table only
// needs expires_ms, after which the slot may be reused.
struct CounterEntry {
  unsigned char digest[16];  // keyed BLAKE2b of the key; all zero: never used
  int64_t window_start_ms;
  int64_t locked_until_ms;
  int64_t expires_ms;
  uint32_t count;
  uint32_t strikes;
};

class SharedCounterTable {
 public:
  static constexpr uint32_t kMinCapacity = 64;
  static constexpr uint32_t kMaxCapacity = 1u << 24;
  static constexpr uint32_t kProbeWindow = 16;

  // Bytes of shared memory a table of `capacity` entries needs.
  static size_t bytes_for(uint32_t capacity);
  // Supervisor: a sealed memfd holding a fresh table. Returns the fd (close-on-exec) or an error.
  static std::variant<int, std::string> create_memfd(uint32_t capacity);
  // Worker: maps the table the supervisor made. The fd may be closed afterwards.
  static std::variant<SharedCounterTable, std::string> attach(int fd);
  // A table private to this process (tests, and a worker started without a supervisor).
  static SharedCounterTable create_private(uint32_t capacity);

  SharedCounterTable(SharedCounterTable&& other) noexcept;
  SharedCounterTable& operator=(SharedCounterTable&& other) noexcept;
  SharedCounterTable(const SharedCounterTable&) = delete;
  SharedCounterTable& operator=(const SharedCounterTable&) = delete;
  ~SharedCounterTable();

  // Runs `change` on the key's entry under the table lock. An absent or expired entry is handed over
  // zeroed (apart from its digest), so `change` sees a fresh counter.
  void update(std::string_view key, int64_t now_ms, const std::function<void(CounterEntry&)>& change);
  // A copy of the key's live entry; a zeroed entry when absent or expired.
  CounterEntry read(std::string_view key, int64_t now_ms);

  uint32_t capacity() const;
  uint64_t evictions() const;  // live entries pushed out because their window was full

 private:
  struct Header;
  SharedCounterTable(void* base, size_t bytes) : base_(base), bytes_(bytes) {}
  static bool lay_out(void* base, uint32_t capacity, bool process_shared);
  Header& header() const;
  CounterEntry* entries() const;
  void digest_of(std::string_view key, unsigned char out[16]) const;

  void* base_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace usersd
