#include "worker/connection_stream.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace usersd {
namespace {

bool wait_for(int sock, short events, int timeout_ms) {
  pollfd pfd{sock, events, 0};
  while (true) {
    const int n = ::poll(&pfd, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0 && (pfd.revents & (events | POLLHUP | POLLERR)) != 0;
  }
}

void address_of(const sockaddr_storage& addr, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    port = ntohs(v4.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    port = ntohs(v6.sin6_port);
  }
  ip = text;
}

}  // namespace

constexpr size_t kMinBuffer = 4096;

ConnectionStream::ConnectionStream(int sock, int read_timeout_ms, int write_timeout_ms)
    : sock_(sock), read_timeout_ms_(read_timeout_ms), write_timeout_ms_(write_timeout_ms), buffer_(kMinBuffer, '\0') {}

int ConnectionStream::read_wait_ms() const {
  if (!deadline_) return read_timeout_ms_;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, read_timeout_ms_));
}

bool ConnectionStream::is_readable() const { return has_buffered_bytes() || wait_for(sock_, POLLIN, read_wait_ms()); }

bool ConnectionStream::wait_for_head_bytes() const {
  if (head_.pressure_fd < 0) return wait_for(sock_, POLLIN, read_wait_ms());
  pollfd fds[2] = {{sock_, POLLIN, 0}, {head_.pressure_fd, POLLIN, 0}};
  int n;
  do {
    n = ::poll(fds, 2, read_wait_ms());
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  if (fds[0].revents != 0) return true;
  // Connections are waiting for a thread while this one dawdles over its head: it gets what is left of
  // its grace, then gives the thread up (slowloris from many addresses would hold every thread otherwise).
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - head_.started).count();
  const int64_t left = head_.grace_ms - spent;
  return left > 0 && wait_for(sock_, POLLIN, static_cast<int>(std::min<int64_t>(left, read_wait_ms())));
}

ConnectionStream::Fill ConnectionStream::fill() {
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == buffer_.size() && begin_ > 0) {  // make room at the back
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) return Fill::closed;  // callers bound the head well below the buffer
  // As in read(): try first, poll only when nothing is there yet (the loop has just seen it readable).
  ssize_t n;
  do {
    n = ::recv(sock_, buffer_.data() + end_, buffer_.size() - end_, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    if (!wait_for_head_bytes()) return Fill::timed_out;
    do {
      n = ::recv(sock_, buffer_.data() + end_, buffer_.size() - end_, 0);
    } while (n < 0 && errno == EINTR);
  }
  if (n <= 0) return Fill::closed;
  end_ += static_cast<size_t>(n);
  return Fill::data;
}

size_t ConnectionStream::head_end(size_t& lines) const {
  lines = 0;
  const char* data = buffer_.data();
  for (size_t i = begin_; i < end_; ++i) {
    if (data[i] != '\n') continue;
    ++lines;
    // A blank line ends the head: "\n\n" or "\n\r\n".
    if (i > begin_ && data[i - 1] == '\n') return i + 1;
    if (i > begin_ + 1 && data[i - 1] == '\r' && data[i - 2] == '\n') return i + 1;
  }
  return std::string::npos;
}

ConnectionStream::Head ConnectionStream::read_head(const HeadLimits& limits, Clock::time_point deadline,
                                                   int pressure_fd) {
  head_ = HeadWait{pressure_fd, Clock::now(), limits.grace_under_pressure_ms};
  // Room for the whole head in one piece, so httplib parses it from memory.
  if (buffer_.size() < limits.max_bytes + kMinBuffer) buffer_.resize(limits.max_bytes + kMinBuffer);
  deadline_ = deadline;
  while (true) {
    size_t lines = 0;
    const size_t end = head_end(lines);
    const size_t head_bytes = (end == std::string::npos ? end_ : end) - begin_;
    const char* line_end = static_cast<const char*>(std::memchr(buffer_.data() + begin_, '\n', end_ - begin_));
    const size_t request_line = line_end ? static_cast<size_t>(line_end - (buffer_.data() + begin_)) : end_ - begin_;
    if (request_line > limits.max_request_line || end != std::string::npos || head_bytes > limits.max_bytes ||
        lines > limits.max_lines + 1) {
      head_.pressure_fd = -1;
    }
    if (request_line > limits.max_request_line) return Head::uri_too_long;
    if (end != std::string::npos) {
      // lines counts the request line and the blank line too.
      return head_bytes > limits.max_bytes || lines > limits.max_lines + 2 ? Head::too_large : Head::complete;
    }
    if (head_bytes > limits.max_bytes || lines > limits.max_lines + 1) return Head::too_large;
    const Fill filled = fill();
    if (filled == Fill::data) continue;
    head_.pressure_fd = -1;  // the body and later reads wait on the socket alone
    return filled == Fill::timed_out ? Head::timed_out : Head::closed;  // closed: EOF or error, nobody to answer
  }
}

bool ConnectionStream::is_writable() const { return wait_for(sock_, POLLOUT, write_timeout_ms_); }

ssize_t ConnectionStream::read(char* ptr, size_t size) {
  if (!has_buffered_bytes()) {
    // Try first, wait only if nothing is there: the connection loop has usually just seen the socket
    // readable, and a second poll() per request cost ~10 % of throughput (make bench).
    ssize_t n;
    do {
      n = ::recv(sock_, buffer_.data(), buffer_.size(), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(sock_, POLLIN, read_wait_ms())) return -1;  // the body deadline applies here
      do {
        n = ::recv(sock_, buffer_.data(), buffer_.size(), 0);
      } while (n < 0 && errno == EINTR);
    }
    if (n <= 0) return n;
    begin_ = 0;
    end_ = static_cast<size_t>(n);
  }
  const size_t count = std::min(size, end_ - begin_);
  std::memcpy(ptr, buffer_.data() + begin_, count);
  begin_ += count;
  return static_cast<ssize_t>(count);
}

ssize_t ConnectionStream::write(const char* ptr, size_t size) {
  size_t sent = 0;
  while (sent < size) {
    // Send first and wait only when the socket buffer is full: a poll() before every send is one syscall
    // more per response. The write timeout still bounds a client that stops reading.
    const ssize_t n = ::send(sock_, ptr + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && is_writable()) continue;
      return -1;
    }
    sent += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(sent);
}

void ConnectionStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) address_of(addr, ip, port);
}

void ConnectionStream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) address_of(addr, ip, port);
}

}  // namespace usersd
