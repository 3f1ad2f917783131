// An httplib::Stream over one accepted TCP socket, with poll-based timeouts and a read buffer.
// We own the per-connection loop (see http_server.cpp) so draining can end keep-alive connections
// cleanly, which httplib's built-in loop cannot, and so a request's head is read in full, against a
// total deadline and size limits, before httplib parses it (slowloris and header floods).
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace usersd {

class ConnectionStream final : public httplib::Stream {
 public:
  using Clock = std::chrono::steady_clock;

  ConnectionStream(int sock, int read_timeout_ms, int write_timeout_ms);

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return sock_; }

  // True when bytes are already buffered (a pipelined request), so no need to wait on the socket.
  bool has_buffered_bytes() const { return begin_ < end_; }

  enum class Head { complete, closed, timed_out, uri_too_long, too_large };
  struct HeadLimits {
    size_t max_request_line;  // longer: uri_too_long
    size_t max_bytes;         // request line + headers; more: too_large
    size_t max_lines;         // header lines; more: too_large
    int64_t grace_under_pressure_ms;  // how long a head may take while pressure_fd is readable
  };
  // Buffers one request head (request line, headers, blank line) before anyone parses it; it must
  // arrive by `deadline` however slowly it trickles in, and within the grace while `pressure_fd`
  // (-1: none) says other connections wait for a thread.
  Head read_head(const HeadLimits& limits, Clock::time_point deadline, int pressure_fd);
  // Later reads (the body) fail once `deadline` passes; nullopt: only the per-read timeout applies.
  void set_read_deadline(std::optional<Clock::time_point> deadline) { deadline_ = deadline; }

 private:
  int read_wait_ms() const;
  enum class Fill { data, closed, timed_out };
  Fill fill();  // one recv into the buffer's free space
  bool wait_for_head_bytes() const;

  struct HeadWait {
    int pressure_fd = -1;
    Clock::time_point started;
    int64_t grace_ms = 0;
  };
  // Where the head in the buffer ends (after its blank line), or npos; counts its lines into `lines`.
  size_t head_end(size_t& lines) const;

  int sock_;
  int read_timeout_ms_;
  int write_timeout_ms_;
  std::optional<Clock::time_point> deadline_;
  HeadWait head_;
  std::string buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace usersd
