// An httplib::Stream over one accepted TCP socket, with poll-based timeouts and a read buffer.
// We own the per-connection loop (see http_server.cpp) so draining can end keep-alive connections
// cleanly, which httplib's built-in loop cannot.
#pragma once

#include <httplib.h>

#include <array>

namespace usersd {

class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int sock, int read_timeout_ms, int write_timeout_ms)
      : sock_(sock), read_timeout_ms_(read_timeout_ms), write_timeout_ms_(write_timeout_ms) {}

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return sock_; }

  // True when bytes are already buffered (a pipelined request), so no need to wait on the socket.
  bool has_buffered_bytes() const { return begin_ < end_; }

 private:
  int sock_;
  int read_timeout_ms_;
  int write_timeout_ms_;
  std::array<char, 4096> buffer_{};
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace usersd
