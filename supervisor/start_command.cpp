// `usersd start`: the supervisor, in the foreground (systemd, containers, make run) or as a daemon that
// returns once every worker is ready.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <spdlog/spdlog.h>

#include "common/logging.hpp"
#include "supervisor/commands.hpp"
#include "supervisor/supervisor.hpp"

namespace usersd {
namespace {

// The path workers are exec'd from. Resolved once: after a deploy replaces the file at this path,
// `usersd reload` starts the new build.
std::string installed_binary_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "/proc/self/exe";
  std::string path(buf, static_cast<size_t>(n));
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() && path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0) {
    path.resize(path.size() - deleted.size());
  }
  return path;
}

// Daemon mode: detach (double fork, new session) and return in the original process only when the
// supervisor reports that every worker is ready, or why it could not start.
int daemonize_and_run(SupervisorOptions options) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::cerr << "usersd: pipe: " << std::strerror(errno) << "\n";
    return 1;
  }
  const pid_t first = ::fork();
  if (first < 0) {
    std::cerr << "usersd: fork: " << std::strerror(errno) << "\n";
    return 1;
  }
  if (first > 0) {
    ::close(pipe_fds[1]);
    std::string result;
    char buf[512];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) result.append(buf, static_cast<size_t>(n));
    ::waitpid(first, nullptr, 0);  // the intermediate session leader, which exits at once
    while (!result.empty() && result.back() == '\n') result.pop_back();
    if (result.rfind("ok ", 0) == 0) {
      const auto space = result.find(' ', 3);
      std::cout << "usersd started: supervisor pid " << result.substr(3, space - 3) << ", "
                << result.substr(space + 1) << " workers on " << options.config.http.bind << ":"
                << options.config.http.port << "\n";
      return 0;
    }
    std::cerr << "usersd: " << (result.empty() ? "the supervisor exited during start-up" : result) << "\n";
    return 1;
  }
  ::close(pipe_fds[0]);
  ::setsid();
  if (::fork() != 0) _exit(0);  // the session leader leaves; the supervisor can never regain a terminal
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ::dup2(null_fd, STDIN_FILENO);
  // Workers inherit stdout and stderr: send them to the log file too, so their early errors are not lost.
  const int log_fd = ::open(options.config.log.file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  ::dup2(log_fd >= 0 ? log_fd : null_fd, STDOUT_FILENO);
  ::dup2(log_fd >= 0 ? log_fd : null_fd, STDERR_FILENO);
  options.readiness_fd = pipe_fds[1];
  setup_logging(options.config.log, "supervisor");
  return run_supervisor(std::move(options));
}

}  // namespace

int run_start(const StartOptions& options) {
  auto config = load_config_or_report(options.config);
  if (!config) return 1;
  std::error_code ec;
  for (const auto& dir : {config->data_dir, config->runtime_dir}) {
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      std::cerr << "usersd: cannot create " << dir << ": " << ec.message() << "\n";
      return 1;
    }
  }
  // Every worker must sign with the same key: an ephemeral one is made here, once, and inherited.
  if (config->jwt.secret_source == "ephemeral") ::setenv("USERSD_JWT_SECRET", config->jwt.secret.c_str(), 1);
  ConfigFlags flags = options.config;
  if (flags.config_file) flags.config_file = config->config_file;  // absolute: workers and reload reuse it
  SupervisorOptions supervisor{*config, flags, installed_binary_path(), -1};
  if (options.foreground) {
    setup_logging(config->log, "supervisor");
    if (config->jwt.secret_source == "ephemeral") {
      spdlog::warn("no JWT secret configured: using an ephemeral one (tokens stop working on restart); "
                   "set USERSD_JWT_SECRET or jwt.secret_file");
    }
    return run_supervisor(std::move(supervisor));
  }
  if (supervisor.config.log.file.empty()) {
    supervisor.config.log.file = config->runtime_dir + "/usersd.log";
    // Workers log to the same file (and reopen it on SIGUSR1) rather than to the inherited stdout.
    supervisor.flags.overrides["log.file"] = supervisor.config.log.file;
  }
  return daemonize_and_run(std::move(supervisor));
}

}  // namespace usersd
