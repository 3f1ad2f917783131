#include "worker/channel.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace usersd::channel {

bool send(int fd, const nlohmann::json& message) {
  const std::string text = message.dump();
  ssize_t n;
  do {
    n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(text.size());
}

std::optional<nlohmann::json> receive(int fd) {
  char buf[4096];
  ssize_t n;
  do {
    n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  auto parsed = nlohmann::json::parse(buf, buf + n, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
  return parsed;
}

}  // namespace usersd::channel
