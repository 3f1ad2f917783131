// Counters and switches shared by a worker's connection threads, its handlers and its supervisor link.
#pragma once

#include <atomic>
#include <cstdint>

namespace usersd {

struct ServingState {
  // Stop-time sequence: health_off first (load balancers deregister us), then draining (listener closed,
  // every response carries Connection: close, idle keep-alive connections are closed).
  std::atomic<bool> health_off{false};
  std::atomic<bool> draining{false};
  std::atomic<uint64_t> requests{0};   // responses sent since start
  std::atomic<int> in_flight{0};       // requests being read, handled or written right now
  std::atomic<int> connections{0};     // open client connections
};

}  // namespace usersd
