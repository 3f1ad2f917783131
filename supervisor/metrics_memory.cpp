#include "supervisor/metrics_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace usersd {

std::unique_ptr<MetricsMemory> MetricsMemory::create(std::string& error) {
  UniqueFd created(::memfd_create("usersd-metrics", MFD_CLOEXEC));
  if (!created.valid()) {
    error = std::string("memfd_create: ") + std::strerror(errno);
    return nullptr;
  }
  // Kept above the fds a child is given (3 channel, 4 metrics, 5 limits), so the child's dup2s cannot
  // overwrite it before it is dup'ed itself.
  UniqueFd fd(::fcntl(created.get(), F_DUPFD_CLOEXEC, 10));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(metrics::kRegionBytes)) != 0) {
    error = std::string("metrics shared memory: ") + std::strerror(errno);
    return nullptr;
  }
  void* mapped = ::mmap(nullptr, metrics::kRegionBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mapped == MAP_FAILED) {
    error = std::string("mmap metrics: ") + std::strerror(errno);
    return nullptr;
  }
  auto* region = static_cast<metrics::Region*>(mapped);  // a fresh memfd reads as zeros: every counter 0
  region->max_slots = metrics::kMaxSlots;
  region->magic.store(metrics::kMagic);
  return std::unique_ptr<MetricsMemory>(new MetricsMemory(std::move(fd), region));
}

MetricsMemory::~MetricsMemory() {
  if (region_ != nullptr) ::munmap(region_, metrics::kRegionBytes);
}

uint64_t slot_requests_total(const metrics::SlotCounters& slot) {
  uint64_t total = 0;
  for (const auto& route : slot.requests) {
    for (const auto& method : route) {
      for (const auto& status_class : method) total += status_class.load(std::memory_order_relaxed);
    }
  }
  return total;
}

}  // namespace usersd
