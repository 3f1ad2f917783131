// sd_notify(3) spoken directly: one datagram per state change to the AF_UNIX socket systemd gave us.
#include "supervisor/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

namespace usersd {
namespace {

std::optional<long long> parse_positive(const char* text) {
  if (text == nullptr) return std::nullopt;
  const std::string_view s(text);
  long long value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value <= 0) return std::nullopt;
  return value;
}

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::optional<std::chrono::microseconds> watchdog_from_environment() {
  const auto usec = parse_positive(std::getenv("WATCHDOG_USEC"));
  if (!usec) return std::nullopt;
  // WATCHDOG_PID names the process systemd watches; if it is someone else (we inherited the
  // environment from our parent), pinging would be wrong.
  if (const char* pid_text = std::getenv("WATCHDOG_PID")) {
    const auto pid = parse_positive(pid_text);
    if (!pid || *pid != static_cast<long long>(getpid())) return std::nullopt;
  }
  return std::chrono::microseconds(*usec);
}

}  // namespace

SystemdNotifier::SystemdNotifier()
    : SystemdNotifier(env_or_empty("NOTIFY_SOCKET"), watchdog_from_environment()) {}

SystemdNotifier::SystemdNotifier(std::string socket_path, std::optional<std::chrono::microseconds> watchdog)
    : socket_path_(std::move(socket_path)), watchdog_(watchdog) {}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) close(fd_);
}

bool SystemdNotifier::notify(const std::string& state) {
  if (!enabled()) return false;

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socklen_t addr_len = 0;
  if (socket_path_[0] == '@') {
    // Abstract names are length-delimited, not NUL-terminated: the address length must cover exactly
    // the leading NUL plus the name, or the kernel looks up a different (NUL-padded) name.
    const std::string_view name = std::string_view(socket_path_).substr(1);
    if (name.size() + 1 > sizeof(addr.sun_path)) return false;
    addr.sun_path[0] = '\0';
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  } else {
    if (socket_path_.size() + 1 > sizeof(addr.sun_path)) return false;
    std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
    addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size() + 1);
  }

  // Kept open across calls: the watchdog pings often, and an fd per ping would be churn for nothing.
  if (fd_ < 0) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
  }

  ssize_t sent;
  do {
    sent = sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), addr_len);
  } while (sent < 0 && errno == EINTR);
  return sent == static_cast<ssize_t>(state.size());
}

std::optional<std::chrono::microseconds> SystemdNotifier::watchdog_interval() const {
  // systemd recommends pinging at half the timeout so one late tick does not get us killed.
  if (!watchdog_ || watchdog_->count() <= 0) return std::nullopt;
  return *watchdog_ / 2;
}

long long monotonic_usec() {
  timespec ts{};
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return static_cast<long long>(ts.tv_sec) * 1000000LL + ts.tv_nsec / 1000;
}

}  // namespace usersd
