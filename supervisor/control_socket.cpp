#include "supervisor/control_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace usersd {
namespace {

bool make_address(const std::string& path, sockaddr_un& addr, std::string& error) {
  addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    error = "control socket path is too long (" + path + ")";
    return false;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<long long>(0, left.count()));
}

}  // namespace

UniqueFd listen_control_socket(const std::string& path, std::string& error) {
  sockaddr_un addr;
  if (!make_address(path, addr, error)) return {};
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) {
    error = std::string("socket: ") + std::strerror(errno);
    return {};
  }
  // We hold the pidfile lock, so a socket file left here belongs to a dead supervisor.
  ::unlink(path.c_str());
  // Created owner-only from the start: no window where another user could connect.
  const mode_t old_mask = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (rc != 0 || ::listen(fd.get(), 16) != 0) {
    error = "cannot listen on " + path + ": " + std::strerror(errno);
    return {};
  }
  return fd;
}

void send_control_reply(int fd, const nlohmann::json& reply) {
  const std::string line = reply.dump() + "\n";
  size_t sent = 0;
  while (sent < line.size()) {
    const ssize_t n = ::send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd pfd{fd, POLLOUT, 0};
      if (::poll(&pfd, 1, 1000) <= 0) return;
    } else {
      return;
    }
  }
}

std::optional<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                              std::chrono::milliseconds timeout, std::string& error,
                                              bool wait_for_close) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr;
  if (!make_address(path, addr, error)) return std::nullopt;
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error = "no usersd is running with control socket " + path + " (" + std::strerror(errno) + ")";
    return std::nullopt;
  }
  send_control_reply(fd.get(), request);
  std::string buffer;
  std::optional<nlohmann::json> reply;
  while (true) {
    pollfd pfd{fd.get(), POLLIN, 0};
    const int n = ::poll(&pfd, 1, remaining_ms(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = "timed out waiting for the supervisor";
      return reply && !wait_for_close ? reply : std::nullopt;
    }
    char chunk[65536];
    const ssize_t got = ::recv(fd.get(), chunk, sizeof chunk, 0);
    if (got <= 0) break;  // the supervisor closed the connection
    buffer.append(chunk, static_cast<size_t>(got));
    if (!reply) {
      const auto newline = buffer.find('\n');
      if (newline == std::string::npos) continue;
      reply = nlohmann::json::parse(buffer.substr(0, newline), nullptr, false);
      if (reply->is_discarded()) {
        error = "malformed reply from the supervisor";
        return std::nullopt;
      }
      if (!wait_for_close) return reply;
    }
  }
  if (!reply) error = "the supervisor closed the connection without replying";
  return reply;
}

}  // namespace usersd
