// systemd notification protocol (sd_notify(3)) without libsystemd: datagrams to $NOTIFY_SOCKET.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace usersd {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET and WATCHDOG_USEC (honouring WATCHDOG_PID) from the environment.
  SystemdNotifier();
  explicit SystemdNotifier(std::string socket_path, std::optional<std::chrono::microseconds> watchdog = std::nullopt);
  ~SystemdNotifier();
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  bool enabled() const { return !socket_path_.empty(); }
  // Sends e.g. "READY=1\nSTATUS=4 workers online". Returns false when disabled or the send failed.
  bool notify(const std::string& state);
  // How often to send WATCHDOG=1 (half of WATCHDOG_USEC), when systemd asked for it.
  std::optional<std::chrono::microseconds> watchdog_interval() const;

 private:
  std::string socket_path_;  // "@name" means the abstract namespace
  std::optional<std::chrono::microseconds> watchdog_;
  int fd_ = -1;
};

// CLOCK_MONOTONIC in microseconds, for "MONOTONIC_USEC=" alongside RELOADING=1.
long long monotonic_usec();

}  // namespace usersd
