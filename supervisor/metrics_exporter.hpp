// GET /metrics: the Prometheus text exposition of every worker slot's counters plus the supervisor's own
// figures (restarts, RSS, CPU, reloads). A pure function of its inputs, so it is unit-tested directly.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "worker/metrics_layout.hpp"

namespace usersd {

struct WorkerFigures {
  int slot = 0;
  bool up = false;             // a worker is online in this slot
  uint64_t restarts = 0;       // unexpected exits restarted by the supervisor
  uint64_t rss_bytes = 0;
  double cpu_seconds = 0;      // of the slot's current process (resets when it is replaced)
  int in_flight = 0;           // from the last heartbeat
  int connections = 0;
};

struct SupervisorFigures {
  std::string version;
  int workers_target = 0;
  int slots_used = 0;          // slots ever used: their counters are summed even after a scale-down
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  uint64_t rss_bytes = 0;
  double cpu_seconds = 0;
  uint64_t log_lines_dropped = 0;  // the supervisor's own
  std::vector<WorkerFigures> workers;
};

// `region` may be null (metrics memory unavailable): then only the supervisor's figures are rendered.
std::string render_prometheus(const metrics::Region* region, const SupervisorFigures& figures);

}  // namespace usersd
