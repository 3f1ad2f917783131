// flock-based pidfile: the lock, not the file's existence, is what says "a supervisor owns this directory",
// so a pidfile left behind by a crash (or kill -9) never blocks the next start.
#include "supervisor/pidfile.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>
#include <utility>

namespace usersd {
namespace {

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

int flock_retrying(int fd, int operation) {
  int rc;
  do {
    rc = flock(fd, operation);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

std::optional<pid_t> read_pid(int fd) {
  char buf[32];
  ssize_t n;
  do {
    n = pread(fd, buf, sizeof(buf) - 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  std::string_view text(buf, static_cast<size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.remove_suffix(1);
  long pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end != text.data() + text.size() || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

// True when `fd` is still the file at `path`. A previous holder unlinks the file before closing it,
// so we may have opened the old inode just before the unlink and locked it just after the close:
// that lock guards a file nobody else will ever open again.
bool still_linked(int fd, const std::string& path) {
  struct stat by_fd {};
  struct stat by_path {};
  if (fstat(fd, &by_fd) != 0 || stat(path.c_str(), &by_path) != 0) return false;
  return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

}  // namespace

std::optional<PidFile> PidFile::acquire(const std::string& path, std::string& error) {
  // Retry bound: each retry means another process won a race that just ended; looping forever would
  // only matter against an adversary recreating the file in a tight loop.
  for (int attempt = 0; attempt < 10; ++attempt) {
    UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd.get() < 0) {
      error = "cannot open " + path + ": " + std::strerror(errno);
      return std::nullopt;
    }
    if (flock_retrying(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        const auto holder = read_pid(fd.get());
        error = "another usersd (pid " + (holder ? std::to_string(*holder) : std::string("unknown")) +
                ") is running with this runtime directory (" + path + " is locked)";
      } else {
        error = "cannot lock " + path + ": " + std::strerror(errno);
      }
      return std::nullopt;
    }
    if (still_linked(fd.get(), path)) return PidFile(path, fd.release());
  }
  error = "cannot lock " + path + ": the file keeps being replaced by another process";
  return std::nullopt;
}

PidFile::PidFile(PidFile&& other) noexcept : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

PidFile& PidFile::operator=(PidFile&& other) noexcept {
  if (this != &other) {
    // Our old claim moves into `old` and is released (unlinked and closed) when it goes out of scope.
    PidFile old(std::move(other));
    std::swap(path_, old.path_);
    std::swap(fd_, old.fd_);
  }
  return *this;
}

PidFile::~PidFile() {
  if (fd_ < 0) return;
  // Unlink while still holding the lock: closing first would let a newcomer lock the file we then delete.
  unlink(path_.c_str());
  close(fd_);
  fd_ = -1;
}

bool PidFile::write_pid() {
  if (fd_ < 0) return false;
  const std::string text = std::to_string(getpid()) + "\n";
  if (ftruncate(fd_, 0) != 0) return false;
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = pwrite(fd_, text.data() + written, text.size() - written, static_cast<off_t>(written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    written += static_cast<size_t>(n);
  }
  return true;
}

void PidFile::forget() {
  // Only our descriptor goes away: a forked copy of the same open file description keeps the lock.
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

std::optional<pid_t> running_pid(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  // flock has no "query" operation; a shared lock conflicting with the holder's exclusive one is the test.
  if (flock_retrying(fd.get(), LOCK_SH | LOCK_NB) == 0) {
    flock(fd.get(), LOCK_UN);
    return std::nullopt;
  }
  if (errno != EWOULDBLOCK) return std::nullopt;
  return read_pid(fd.get());
}

}  // namespace usersd
