#include "worker/worker_metrics.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

namespace usersd {
namespace {

using namespace metrics;

void observe(Histogram& h, std::chrono::nanoseconds duration) {
  const double seconds = std::chrono::duration<double>(duration).count();
  h.buckets[latency_bucket(seconds)].fetch_add(1, std::memory_order_relaxed);
  h.sum_us.fetch_add(static_cast<uint64_t>(duration.count() / 1000), std::memory_order_relaxed);
}

}  // namespace

std::unique_ptr<WorkerMetrics> WorkerMetrics::attach(int slot) {
  struct stat st {};
  if (slot < 0 || slot >= kMaxSlots || ::fstat(kMetricsFd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<size_t>(st.st_size) != kRegionBytes) {
    return nullptr;
  }
  void* mapped = ::mmap(nullptr, kRegionBytes, PROT_READ | PROT_WRITE, MAP_SHARED, kMetricsFd, 0);
  if (mapped == MAP_FAILED) return nullptr;
  auto* region = static_cast<Region*>(mapped);
  if (region->magic.load() != kMagic) {  // another build's layout: do not scribble on it
    ::munmap(mapped, kRegionBytes);
    return nullptr;
  }
  auto metrics = std::unique_ptr<WorkerMetrics>(new WorkerMetrics(region, &region->slots[slot]));
  metrics->intern_route("unmatched");
  return metrics;
}

WorkerMetrics::~WorkerMetrics() { ::munmap(region_, kRegionBytes); }

int WorkerMetrics::intern_route(std::string_view name) {
  const uint32_t count = slot_->route_count.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < count; ++i) {
    if (std::string_view(slot_->route_names[i]) == name) return static_cast<int>(i);
  }
  if (count >= static_cast<uint32_t>(kMaxRoutes)) return 0;
  const size_t length = std::min(name.size(), static_cast<size_t>(kRouteNameBytes - 1));
  std::memcpy(slot_->route_names[count], name.data(), length);
  slot_->route_names[count][length] = '\0';
  slot_->route_count.store(count + 1, std::memory_order_release);
  return static_cast<int>(count);
}

void WorkerMetrics::record_request(int route, std::string_view method, int status, std::chrono::nanoseconds duration,
                                   uint64_t bytes) {
  if (route < 0 || route >= kMaxRoutes) route = 0;
  const int status_class = std::clamp(status / 100, 1, kStatusClasses) - 1;
  slot_->requests[route][method_index(method)][status_class].fetch_add(1, std::memory_order_relaxed);
  observe(slot_->request_seconds[route], duration);
  slot_->response_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

void WorkerMetrics::record_login(bool succeeded) {
  (succeeded ? slot_->logins_succeeded : slot_->logins_failed).fetch_add(1, std::memory_order_relaxed);
}

void WorkerMetrics::record_store(StoreOp op, std::chrono::nanoseconds duration, bool unavailable) {
  const auto i = static_cast<size_t>(op);
  observe(slot_->store_seconds[i], duration);
  if (unavailable) slot_->store_errors[i].fetch_add(1, std::memory_order_relaxed);
}

void WorkerMetrics::record_dropped_log_lines(uint64_t total) {
  const uint64_t seen = dropped_seen_.exchange(total);
  if (total > seen) slot_->log_lines_dropped.fetch_add(total - seen, std::memory_order_relaxed);
}

}  // namespace usersd
