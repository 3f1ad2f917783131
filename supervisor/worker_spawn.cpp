#include "supervisor/worker_spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/shared_counter_table.hpp"
#include "worker/channel.hpp"
#include "worker/metrics_layout.hpp"

namespace usersd {
namespace {

std::vector<std::string> worker_argv(const WorkerLaunch& launch) {
  std::vector<std::string> argv = {launch.binary, "worker", "--slot", std::to_string(launch.slot)};
  if (launch.config_file) {
    argv.push_back("--config");
    argv.push_back(*launch.config_file);
  }
  for (const auto& [key, value] : launch.overrides) {
    argv.push_back("--set");
    argv.push_back(key + "=" + value);
  }
  return argv;
}

// Puts `fd` at `target` without close-on-exec. Only async-signal-safe calls.
bool place_fd(int fd, int target) {
  if (fd == target) return fcntl(fd, F_SETFD, 0) == 0;
  return dup2(fd, target) >= 0;
}

// Runs in the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(int channel_fd, int metrics_fd, int limits_fd, char* const* argv) {
  // The supervisor blocks signals to read them from a signalfd; the mask survives exec, so clear it.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Moved out of the way first: it could sit at fd 3, which the channel is about to take.
  if (limits_fd >= 0 && limits_fd <= kLimitsTableFd) {
    limits_fd = fcntl(limits_fd, F_DUPFD_CLOEXEC, kLimitsTableFd + 1);
    if (limits_fd < 0) _exit(126);
  }
  if (channel_fd != channel::kChannelFd) {
    if (dup2(channel_fd, channel::kChannelFd) < 0) _exit(126);
  } else {
    // Already at fd 3: only drop close-on-exec.
    fcntl(channel_fd, F_SETFD, 0);
  }
  // The memfd sits at fd >= 10 (metrics_memory.cpp), so the dup2 above cannot have replaced it.
  if (metrics_fd >= 0 && dup2(metrics_fd, metrics::kMetricsFd) < 0) _exit(126);
  // Above fd 5 by now (moved first), so neither dup2 above replaced it.
  if (limits_fd >= 0 && !place_fd(limits_fd, kLimitsTableFd)) _exit(126);
  execv(argv[0], argv);
  const char msg[] = "usersd worker: exec failed\n";
  [[maybe_unused]] auto n = write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(127);
}

}  // namespace

std::optional<SpawnedWorker> spawn_worker(const WorkerLaunch& launch, std::string& error) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    error = std::string("socketpair: ") + std::strerror(errno);
    return std::nullopt;
  }
  UniqueFd ours(fds[0]), theirs(fds[1]);
  // Built before fork: the child must not allocate.
  const std::vector<std::string> args = worker_argv(launch);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) {
    error = std::string("fork: ") + std::strerror(errno);
    return std::nullopt;
  }
  if (pid == 0) exec_child(theirs.get(), launch.metrics_fd, launch.limits_table_fd, argv.data());
  return SpawnedWorker{pid, std::move(ours)};
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("killed by SIG") + (name ? name : std::to_string(WTERMSIG(status)).c_str());
  }
  return "status " + std::to_string(status);
}

}  // namespace usersd
