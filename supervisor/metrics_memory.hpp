// The supervisor's side of the metrics shared memory (worker/metrics_layout.hpp): a memfd it creates once,
// hands to every worker as fd 4, and reads when /metrics is scraped or `usersd status` asks.
#pragma once

#include <memory>
#include <string>

#include "supervisor/unique_fd.hpp"
#include "worker/metrics_layout.hpp"

namespace usersd {

class MetricsMemory {
 public:
  static std::unique_ptr<MetricsMemory> create(std::string& error);
  MetricsMemory(const MetricsMemory&) = delete;
  MetricsMemory& operator=(const MetricsMemory&) = delete;
  ~MetricsMemory();

  int fd() const { return fd_.get(); }  // close-on-exec; spawn_worker dups it to fd 4 in the child
  const metrics::Region& region() const { return *region_; }

 private:
  MetricsMemory(UniqueFd fd, metrics::Region* region) : fd_(std::move(fd)), region_(region) {}
  UniqueFd fd_;
  metrics::Region* region_;
};

// Requests answered by the workers of one slot, all worker processes of that slot together.
uint64_t slot_requests_total(const metrics::SlotCounters& slot);

}  // namespace usersd
