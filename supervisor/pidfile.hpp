// The supervisor's exclusive claim on a runtime directory: <runtime-dir>/usersd.pid, locked with flock.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace usersd {

class PidFile {
 public:
  // Opens (creating, mode 0644) and takes a non-blocking exclusive flock. On failure `error` says why,
  // naming the pid of the holder when it is another usersd ("another usersd (pid 1234) holds /run/usersd/usersd.pid").
  static std::optional<PidFile> acquire(const std::string& path, std::string& error);
  PidFile(PidFile&& other) noexcept;
  PidFile& operator=(PidFile&& other) noexcept;
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  ~PidFile();  // removes the file and releases the lock

  // Truncates and writes the current pid (call again after daemonizing: the pid changed).
  bool write_pid();
  // The lock is shared across fork; a child that must not release it calls this before exiting.
  void forget();
  const std::string& path() const { return path_; }

 private:
  PidFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

// The pid recorded in a pidfile whose lock is currently held, or nullopt when nobody holds it.
std::optional<pid_t> running_pid(const std::string& path);

}  // namespace usersd
