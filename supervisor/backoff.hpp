// PM2-style exponential restart backoff: 100 ms x1.5 per consecutive failure, capped at 15 s,
// forgotten once a worker has stayed up for 30 s.
#pragma once

#include <chrono>

namespace usersd {

class RestartBackoff {
 public:
  using Duration = std::chrono::milliseconds;

  RestartBackoff(Duration initial = Duration(100), double factor = 1.5, Duration cap = Duration(15000),
                 Duration reset_after = Duration(30000));

  // A worker exited after running for `uptime`; returns how long to wait before starting the next one.
  Duration on_exit(Duration uptime);
  int consecutive_failures() const { return failures_; }

 private:
  Duration initial_, cap_, reset_after_;
  double factor_;
  int failures_ = 0;
};

}  // namespace usersd
