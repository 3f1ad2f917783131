// PM2-style restart backoff: see backoff.hpp for the policy.
#include "supervisor/backoff.hpp"

#include <climits>
#include <cmath>

namespace usersd {

RestartBackoff::RestartBackoff(Duration initial, double factor, Duration cap, Duration reset_after)
    : initial_(initial), cap_(cap), reset_after_(reset_after), factor_(factor) {}

RestartBackoff::Duration RestartBackoff::on_exit(Duration uptime) {
  // A worker that stayed up long enough was healthy; its crash starts a fresh streak.
  if (uptime >= reset_after_) failures_ = 0;
  if (failures_ < INT_MAX) ++failures_;
  // Computed in double so a long streak saturates at the cap instead of overflowing the integer count.
  const double delay_ms =
      static_cast<double>(initial_.count()) * std::pow(factor_, static_cast<double>(failures_ - 1));
  if (!(delay_ms < static_cast<double>(cap_.count()))) return cap_;
  return Duration(static_cast<Duration::rep>(delay_ms));
}

}  // namespace usersd
