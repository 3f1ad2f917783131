// A worker's view of its slot in the metrics shared memory: what it records per request and per store call.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "worker/metrics_layout.hpp"

namespace usersd {

class WorkerMetrics {
 public:
  // Maps the supervisor's region from metrics::kMetricsFd. nullptr when there is none (metrics disabled
  // with admin.port 0, or a worker started by hand): then nothing is recorded.
  static std::unique_ptr<WorkerMetrics> attach(int slot);
  ~WorkerMetrics();
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // The index of a route template in this slot's table, adding it if new (call at start, one thread).
  // Index 0 ("unmatched") when the table is full.
  int intern_route(std::string_view name);

  void record_request(int route, std::string_view method, int status, std::chrono::nanoseconds duration,
                      uint64_t bytes);
  void record_login(bool succeeded);
  void record_store(metrics::StoreOp op, std::chrono::nanoseconds duration, bool unavailable);
  // Adds what the log writer dropped since the last call (it reports a running total).
  void record_dropped_log_lines(uint64_t total);

 private:
  WorkerMetrics(metrics::Region* region, metrics::SlotCounters* slot) : region_(region), slot_(slot) {}
  metrics::Region* region_;
  metrics::SlotCounters* slot_;
  std::atomic<uint64_t> dropped_seen_{0};
};

}  // namespace usersd
