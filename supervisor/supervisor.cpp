#include "supervisor/supervisor.hpp"

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/logging.hpp"
#include "common/shared_counter_table.hpp"
#include "common/version.hpp"
#include "supervisor/admin_server.hpp"
#include "supervisor/backoff.hpp"
#include "supervisor/control_socket.hpp"
#include "supervisor/metrics_exporter.hpp"
#include "supervisor/metrics_memory.hpp"
#include "supervisor/pidfile.hpp"
#include "supervisor/process_info.hpp"
#include "supervisor/sd_notify.hpp"
#include "supervisor/worker_spawn.hpp"
#include "worker/channel.hpp"

namespace usersd {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kAbortGrace = seconds(5);      // SIGABRT -> SIGKILL for a hung worker
constexpr auto kFastStopGrace = seconds(2);   // SIGQUIT -> SIGKILL on a fast stop
constexpr auto kSampleInterval = seconds(1);  // CPU/RSS sampling and heartbeat checks

enum class WorkerState { starting, online, draining };

const char* state_name(WorkerState s) {
  switch (s) {
    case WorkerState::starting: return "starting";
    case WorkerState::online: return "online";
    case WorkerState::draining: return "draining";
  }
  return "?";
}

double seconds_since(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration<double>(now - t).count();
}

// Supervisor events are logged as a sentence for people plus fields for machines: `event` names what
// happened; a worker's slot and pid are worker_slot/worker_pid (slot/pid of the line are the supervisor's).
JsonFields event_fields(const char* event) { return std::move(JsonFields().add("event", event)); }
JsonFields worker_event(const char* event, int slot, pid_t pid) {
  return std::move(JsonFields().add("event", event).add("worker_slot", slot).add("worker_pid", static_cast<int64_t>(pid)));
}
JsonFields& add_exit(JsonFields& fields, int status) {
  if (WIFEXITED(status)) fields.add("exit_status", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    fields.add("signal", name ? "SIG" + std::string(name) : std::to_string(WTERMSIG(status)));
  }
  return fields;
}

struct Worker {
  pid_t pid = 0;
  int slot = 0;
  WorkerState state = WorkerState::starting;
  UniqueFd channel;
  Clock::time_point started;
  Clock::time_point last_heartbeat;
  std::optional<Clock::time_point> kill_at;  // SIGKILL deadline once asked to go
  bool abort_sent = false;
  bool listening = true;  // until the worker reports its listener closed (or exits)
  uint64_t requests = 0;
  int in_flight = 0;
  int connections = 0;
  uint64_t recycle_after_requests = 0;  // 0: never
  std::optional<ProcessSample> sample;
  Clock::time_point sampled_at;
  double cpu = 0;
};

struct Slot {
  pid_t current = 0;      // the worker serving this slot (0: none)
  pid_t replacement = 0;  // a new worker starting to take over (reload, recycle)
  RestartBackoff backoff;
  int restarts = 0;
  std::optional<Clock::time_point> restart_at;
  std::string last_exit;
  std::string spawn_error;
};

// Is anything (usersd or not) listening on the port? Probed without SO_REUSEPORT, so even another
// SO_REUSEPORT server is detected instead of silently sharing the port with us.
bool port_available(const std::string& host, int port, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &result) != 0 || result == nullptr) {
    error = "cannot resolve " + host;
    return false;
  }
  UniqueFd fd(::socket(result->ai_family, result->ai_socktype | SOCK_CLOEXEC, result->ai_protocol));
  int yes = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  const bool ok = fd.valid() && ::bind(fd.get(), result->ai_addr, result->ai_addrlen) == 0;
  if (!ok) error = host + ":" + std::to_string(port) + " is in use by another program (" + std::strerror(errno) + ")";
  freeaddrinfo(result);
  return ok;
}

class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options)
      : options_(std::move(options)), config_(options_.config), started_wall_(std::chrono::system_clock::now()) {}

  int run();

 private:
  // --- start-up and shut-down
  bool claim_runtime(std::string& error);
  void report_startup(const std::string& result);
  void cleanup();
  // --- the loop
  void handle_signal();
  void handle_channel(pid_t pid);
  void accept_control_client();
  void handle_control_client(int fd);
  void reap_children();
  void on_worker_exit(pid_t pid, int status);
  void tick(Clock::time_point now);
  void murder_hung_workers(Clock::time_point now);
  void manage_workers(Clock::time_point now);
  void advance_replacements(Clock::time_point now);
  void advance_stop(Clock::time_point now);
  void sample_workers(Clock::time_point now);
  void notify_watchdog(Clock::time_point now);
  int poll_timeout_ms(Clock::time_point now) const;
  // --- operations
  bool start_worker(int slot_index, bool as_replacement);
  void retire(pid_t pid, int signal, Clock::duration grace);
  void begin_reload(int client_fd);
  void finish_reload(bool ok, const std::string& message);
  bool old_listeners_open() const;
  void answer_reload_waiters(const nlohmann::json& reply);
  void fail_replacement(int slot_index, const std::string& why);
  void begin_stop(bool fast);
  void scale(const std::string& value, int client_fd);
  void answer_scale_waiters();
  void reply_and_close(int fd, const nlohmann::json& reply);
  void close_client(int fd);
  void queue_replacement(int slot_index, const std::string& why);
  // --- status
  int target_workers() const;
  bool all_online() const;
  nlohmann::json status_json(Clock::time_point now) const;
  std::string slot_state(const Slot& slot) const;
  Worker* worker(pid_t pid);

  SupervisorOptions options_;
  Config config_;
  std::chrono::system_clock::time_point started_wall_;
  Clock::time_point started_ = Clock::now();
  std::optional<PidFile> pidfile_;
  UniqueFd control_;
  UniqueFd signals_;
  UniqueFd limits_table_;  // memfd of the shared abuse-limit counters (worker fd 5)
  SystemdNotifier notifier_;
  std::string control_path_;
  std::string tcp_migrate_req_ = "unknown";

  std::map<pid_t, Worker> workers_;
  std::vector<Slot> slots_;
  int target_ = 1;

  bool startup_complete_ = false;
  std::deque<int> replace_queue_;
  int replacing_slot_ = -1;
  Clock::time_point replacement_started_;
  bool reloading_ = false;
  Clock::time_point reload_started_;
  std::vector<int> reload_waiters_;
  std::vector<int> scale_waiters_;

  bool stopping_ = false;
  bool fast_stop_ = false;
  std::optional<Clock::time_point> drain_at_;  // when stopping: SIGTERM workers at this time
  std::vector<int> stop_waiters_;

  struct ControlClient {
    std::string buffer;     // bytes of the request line read so far
    bool answered = false;  // request taken: later input is ignored, EOF still ends it
  };
  std::map<int, ControlClient> control_clients_;
  Clock::time_point next_sample_ = Clock::now();
  Clock::time_point next_watchdog_ = Clock::now();
  std::mt19937_64 rng_{std::random_device{}()};
  int exit_code_ = 0;

  // --- metrics: counters live in shared memory; the supervisor's own figures are published for the
  // admin thread once per loop iteration.
  void publish_figures();
  std::string render_metrics();
  std::unique_ptr<MetricsMemory> metrics_;
  std::mutex figures_mutex_;
  SupervisorFigures figures_;
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  int slots_used_ = 0;
  std::unique_ptr<AdminServer> admin_;  // last: its thread reads the members above until it is joined
};

Worker* Supervisor::worker(pid_t pid) {
  auto it = workers_.find(pid);
  return it == workers_.end() ? nullptr : &it->second;
}

int Supervisor::target_workers() const { return config_.workers > 0 ? config_.workers : available_cpus(); }

bool Supervisor::claim_runtime(std::string& error) {
  std::error_code ec;
  std::filesystem::create_directories(config_.runtime_dir, ec);
  if (ec) {
    error = "cannot create runtime_dir " + config_.runtime_dir + ": " + ec.message();
    return false;
  }
  pidfile_ = PidFile::acquire(config_.runtime_dir + "/usersd.pid", error);
  if (!pidfile_) return false;
  pidfile_->write_pid();
  if (!port_available(config_.http.bind, config_.http.port, error)) return false;
  control_path_ = config_.runtime_dir + "/usersd.sock";
  control_ = listen_control_socket(control_path_, error);
  if (!control_.valid()) return false;
  // Made once: every worker, including restarted and reloaded ones, maps the same abuse-limit counters.
  auto table = SharedCounterTable::create_memfd(static_cast<uint32_t>(config_.limits.table_entries));
  if (auto* message = std::get_if<std::string>(&table)) {
    error = "cannot create the shared limits table: " + *message;
    return false;
  }
  limits_table_.reset(std::get<int>(table));
  if (config_.admin.port != 0) {
    metrics_ = MetricsMemory::create(error);
    if (!metrics_) return false;
    admin_ = std::make_unique<AdminServer>([this] { return render_metrics(); });
    if (!admin_->start(config_.admin.bind, config_.admin.port, error)) return false;
  }
  return true;
}

void Supervisor::report_startup(const std::string& result) {
  if (options_.readiness_fd < 0) return;
  const std::string line = result + "\n";
  [[maybe_unused]] auto n = ::write(options_.readiness_fd, line.data(), line.size());
  ::close(options_.readiness_fd);
  options_.readiness_fd = -1;
}

int Supervisor::run() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGCHLD}) sigaddset(&mask, sig);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signals_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

  std::string error;
  if (!claim_runtime(error)) {
    spdlog::critical("{}", error);
    report_startup("error: " + error);
    return 1;
  }
  if (auto migrate = read_sysctl("net/ipv4/tcp_migrate_req")) {
    tcp_migrate_req_ = *migrate;
    if (*migrate == "0") {
      spdlog::warn("net.ipv4.tcp_migrate_req is 0: connections still queued on a worker's listener when it closes "
                   "(reload, scale down, stop) are reset instead of moving to a sibling; set it to 1 (the AMI does)");
    }
  }
  target_ = target_workers();
  log_event(spdlog::level::info,
            fmt::format("usersd {} supervisor starting {} workers on {}:{} (binary {}, store {})", version(), target_,
                        config_.http.bind, config_.http.port, options_.binary, redact_url(config_.storage.url)),
            event_fields("supervisor_starting").add("version", version()).add("workers", target_));
  const auto now = Clock::now();
  manage_workers(now);

  while (!(stopping_ && workers_.empty())) {
    // Which fd belongs to whom is fixed before poll(): handlers below may add or drop clients and workers.
    std::vector<pollfd> fds = {{signals_.get(), POLLIN, 0}, {control_.get(), POLLIN, 0}};
    for (const auto& [fd, _] : control_clients_) fds.push_back({fd, POLLIN, 0});
    const size_t clients_end = fds.size();
    std::vector<pid_t> channel_owner;
    for (const auto& [pid, w] : workers_) {
      if (!w.channel.valid()) continue;
      fds.push_back({w.channel.get(), POLLIN, 0});
      channel_owner.push_back(pid);
    }
    const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms(Clock::now()));
    if (n < 0 && errno != EINTR) {
      spdlog::critical("poll: {}", std::strerror(errno));
      break;
    }
    if (n > 0) {
      for (size_t i = clients_end; i < fds.size(); ++i) {
        if (fds[i].revents) handle_channel(channel_owner[i - clients_end]);
      }
      for (size_t i = 2; i < clients_end; ++i) {
        if (fds[i].revents && control_clients_.count(fds[i].fd)) handle_control_client(fds[i].fd);
      }
      if (fds[1].revents) accept_control_client();
      if (fds[0].revents) handle_signal();
    }
    reap_children();
    tick(Clock::now());
  }
  cleanup();
  return exit_code_;
}

int Supervisor::poll_timeout_ms(Clock::time_point now) const {
  Clock::time_point next = next_sample_;
  auto consider = [&next](std::optional<Clock::time_point> t) {
    if (t && *t < next) next = *t;
  };
  for (const auto& slot : slots_) consider(slot.restart_at);
  for (const auto& [pid, w] : workers_) consider(w.kill_at);
  consider(drain_at_);
  if (notifier_.watchdog_interval()) consider(next_watchdog_);
  const auto ms = std::chrono::duration_cast<milliseconds>(next - now).count();
  return static_cast<int>(std::clamp<long long>(ms + 1, 0, 1000));
}

void Supervisor::handle_signal() {
  signalfd_siginfo info;
  while (::read(signals_.get(), &info, sizeof info) == sizeof info) {
    switch (info.ssi_signo) {
      case SIGTERM: begin_stop(false); break;
      case SIGINT:
      case SIGQUIT: begin_stop(true); break;
      case SIGHUP: begin_reload(-1); break;
      case SIGTTIN: scale("+1", -1); break;
      case SIGTTOU: scale("-1", -1); break;
      case SIGUSR1:
        spdlog::info("SIGUSR1: reopening log files");
        reopen_log_file();
        for (const auto& [pid, w] : workers_) ::kill(pid, SIGUSR1);
        break;
      case SIGCHLD: break;  // reaped after every loop iteration
    }
  }
}

void Supervisor::handle_channel(pid_t pid) {
  Worker* w = worker(pid);
  if (w == nullptr) return;
  auto message = channel::receive(w->channel.get());
  if (!message) {
    w->channel.reset();  // the worker exited or closed its end; waitpid tells the rest
    return;
  }
  const auto now = Clock::now();
  w->last_heartbeat = now;
  const std::string type = message->value("type", "");
  if (type == "listener_closed") {
    w->listening = false;
    if (reloading_ && replace_queue_.empty() && replacing_slot_ < 0) finish_reload(true, "");
    answer_scale_waiters();
    return;
  }
  if (type == "heartbeat") {
    w->requests = message->value("requests", uint64_t{0});
    w->in_flight = message->value("in_flight", 0);
    w->connections = message->value("connections", 0);
    return;
  }
  if (type != "ready" || w->state != WorkerState::starting) return;
  w->state = WorkerState::online;
  Slot& slot = slots_[static_cast<size_t>(w->slot)];
  if (slot.replacement == pid) {
    const pid_t old = slot.current;
    slot.current = pid;
    slot.replacement = 0;
    replacing_slot_ = -1;
    const double ms = seconds_since(w->started, now) * 1000;
    log_event(spdlog::level::info, fmt::format("worker {} (pid {}) ready in {:.0f} ms, replacing pid {}", w->slot, pid, ms, old),
              worker_event("worker_ready", w->slot, pid).add("ready_ms", ms).add("replacing_pid", static_cast<int64_t>(old)));
    if (old != 0) retire(old, SIGTERM, seconds(config_.supervisor.graceful_timeout));
    if (replace_queue_.empty() && reloading_) finish_reload(true, "");  // done once old listeners are closed
  } else {
    const double ms = seconds_since(w->started, now) * 1000;
    log_event(spdlog::level::info, fmt::format("worker {} (pid {}) ready in {:.0f} ms", w->slot, pid, ms),
              worker_event("worker_ready", w->slot, pid).add("ready_ms", ms));
  }
  if (stopping_ && !fast_stop_ && !drain_at_) {
    // Became ready while we are stopping: it must start failing health checks too.
    channel::send(w->channel.get(), {{"type", "health_off"}});
  }
  if (!startup_complete_ && all_online()) {
    startup_complete_ = true;
    log_event(spdlog::level::info, fmt::format("all {} workers online", slots_.size()),
              event_fields("all_online").add("workers", static_cast<int64_t>(slots_.size())));
    notifier_.notify("READY=1\nMAINPID=" + std::to_string(getpid()) + "\nSTATUS=" + std::to_string(slots_.size()) +
                     " workers online");
    report_startup("ok " + std::to_string(getpid()) + " " + std::to_string(slots_.size()));
  }
  answer_scale_waiters();
}

void Supervisor::accept_control_client() {
  while (true) {
    UniqueFd fd(::accept4(control_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.valid()) return;
    // Owner-only socket file, and the peer must be us or root: status shows pids and paths, stop stops.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != getuid() && cred.uid != 0)) {
      continue;
    }
    control_clients_[fd.release()] = ControlClient{};
  }
}

void Supervisor::close_client(int fd) {
  if (control_clients_.erase(fd) == 0) return;
  for (auto* waiters : {&reload_waiters_, &scale_waiters_, &stop_waiters_}) {
    waiters->erase(std::remove(waiters->begin(), waiters->end(), fd), waiters->end());
  }
  ::close(fd);
}

void Supervisor::reply_and_close(int fd, const nlohmann::json& reply) {
  send_control_reply(fd, reply);
  close_client(fd);
}

void Supervisor::handle_control_client(int fd) {
  char buf[4096];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  if (n < 0 && errno == EAGAIN) return;
  if (n <= 0) return close_client(fd);  // the client went away (a waiting `usersd reload` interrupted, say)
  ControlClient& client = control_clients_[fd];
  if (client.answered) return;
  client.buffer.append(buf, static_cast<size_t>(n));
  const auto newline = client.buffer.find('\n');
  if (newline == std::string::npos) {
    if (client.buffer.size() > 4096) close_client(fd);
    return;
  }
  client.answered = true;
  const auto request = nlohmann::json::parse(client.buffer.substr(0, newline), nullptr, false);
  const std::string cmd = request.is_object() ? request.value("cmd", "") : "";
  if (cmd == "status") return reply_and_close(fd, status_json(Clock::now()));
  if (cmd == "reload") return begin_reload(fd);
  if (cmd == "scale") return scale(request.value("value", ""), fd);
  if (cmd == "stop") {
    send_control_reply(fd, {{"ok", true}, {"pid", getpid()}});
    stop_waiters_.push_back(fd);  // closed when we exit: that is how `usersd stop` knows we are gone
    return begin_stop(request.value("fast", false));
  }
  reply_and_close(fd, {{"ok", false}, {"error", "unknown command"}});
}

void Supervisor::reap_children() {
  while (true) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    on_worker_exit(pid, status);
  }
}

void Supervisor::on_worker_exit(pid_t pid, int status) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  const Worker w = std::move(it->second);
  workers_.erase(it);
  const std::string how = describe_wait_status(status);
  const auto now = Clock::now();
  if (w.state == WorkerState::draining) {
    JsonFields fields = worker_event("worker_finished", w.slot, pid);
    log_event(spdlog::level::info, fmt::format("worker {} (pid {}) finished ({}), served {} requests", w.slot, pid, how, w.requests),
              add_exit(fields, status).add("requests", w.requests));
    if (reloading_ && replace_queue_.empty() && replacing_slot_ < 0) finish_reload(true, "");
    answer_scale_waiters();
    return;
  }
  if (static_cast<size_t>(w.slot) >= slots_.size()) return;
  Slot& slot = slots_[static_cast<size_t>(w.slot)];
  if (slot.replacement == pid) {
    slot.replacement = 0;
    return fail_replacement(w.slot, "the new worker " + std::to_string(pid) + " exited before it was ready (" + how + ")");
  }
  if (slot.current != pid) return;
  slot.current = 0;
  slot.last_exit = how;
  if (stopping_) return;
  if (!startup_complete_) {
    const std::string why = "worker " + std::to_string(w.slot) + " exited before it was ready (" + how +
                            "); its log lines above say why";
    JsonFields fields = worker_event("worker_startup_failed", w.slot, pid);
    log_event(spdlog::level::critical, why, add_exit(fields, status));
    report_startup("error: " + why);
    exit_code_ = 1;
    return begin_stop(true);
  }
  replace_queue_.erase(std::remove(replace_queue_.begin(), replace_queue_.end(), w.slot), replace_queue_.end());
  const auto delay = slot.backoff.on_exit(std::chrono::duration_cast<milliseconds>(now - w.started));
  slot.restart_at = now + delay;
  JsonFields fields = worker_event("worker_exited", w.slot, pid);
  add_exit(fields, status).add("uptime_s", seconds_since(w.started, now)).add("restart_in_ms", static_cast<int64_t>(delay.count()));
  log_event(spdlog::level::warn,
            fmt::format("worker {} (pid {}) exited unexpectedly ({}) after {:.1f}s; restarting in {} ms", w.slot, pid, how,
                        seconds_since(w.started, now), delay.count()),
            fields);
}

void Supervisor::tick(Clock::time_point now) {
  murder_hung_workers(now);
  if (!stopping_) {
    manage_workers(now);
    advance_replacements(now);
  }
  advance_stop(now);
  if (now >= next_sample_) {
    sample_workers(now);
    next_sample_ = now + kSampleInterval;
  }
  notify_watchdog(now);
  publish_figures();
}

void Supervisor::murder_hung_workers(Clock::time_point now) {
  const auto timeout = seconds(config_.supervisor.worker_timeout);
  for (auto& [pid, w] : workers_) {
    if (w.kill_at && now >= *w.kill_at) {
      log_event(spdlog::level::err,
                fmt::format("worker {} (pid {}) still running {} after it was asked to stop: SIGKILL", w.slot, pid,
                            w.abort_sent ? "5 s" : "at its deadline"),
                worker_event("worker_killed", w.slot, pid).add("signal", "SIGKILL").add("reason", "stop_deadline"));
      ::kill(pid, SIGKILL);
      w.kill_at.reset();
      continue;
    }
    if (w.abort_sent || w.state == WorkerState::draining) continue;
    if (w.state == WorkerState::starting && now - w.started > seconds(config_.supervisor.ready_timeout)) {
      log_event(spdlog::level::err,
                fmt::format("worker {} (pid {}) not ready after ready_timeout ({} s): killing it", w.slot, pid,
                            config_.supervisor.ready_timeout),
                worker_event("worker_killed", w.slot, pid).add("signal", "SIGKILL").add("reason", "ready_timeout"));
      ::kill(pid, SIGKILL);
      w.abort_sent = true;
      continue;
    }
    if (w.state == WorkerState::online && now - w.last_heartbeat > timeout) {
      log_event(spdlog::level::err,
                fmt::format("worker {} (pid {}) sent no heartbeat for {} s (worker_timeout): killing it with SIGABRT",
                            w.slot, pid, config_.supervisor.worker_timeout),
                worker_event("worker_killed", w.slot, pid).add("signal", "SIGABRT").add("reason", "heartbeat_timeout"));
      ::kill(pid, SIGABRT);
      ::kill(pid, SIGCONT);  // a stopped process cannot act on SIGABRT
      w.abort_sent = true;
      w.kill_at = now + kAbortGrace;
    }
  }
}

bool Supervisor::all_online() const {
  if (slots_.empty()) return false;
  for (const auto& slot : slots_) {
    auto it = workers_.find(slot.current);
    if (slot.current == 0 || it == workers_.end() || it->second.state != WorkerState::online) return false;
  }
  return true;
}

bool Supervisor::start_worker(int slot_index, bool as_replacement) {
  Slot& slot = slots_[static_cast<size_t>(slot_index)];
  WorkerLaunch launch{options_.binary, slot_index, config_.config_file.empty() ? std::nullopt
                                                                                : std::optional(config_.config_file),
                      options_.flags.overrides, metrics_ ? metrics_->fd() : -1};
  launch.limits_table_fd = limits_table_.get();
  std::string error;
  auto spawned = spawn_worker(launch, error);
  const auto now = Clock::now();
  if (!spawned) {
    slot.spawn_error = error;
    slot.restart_at = now + slot.backoff.on_exit(milliseconds(0));
    log_event(spdlog::level::err, fmt::format("cannot start worker {}: {}", slot_index, error),
              worker_event("worker_spawn_failed", slot_index, 0).add("error", error));
    return false;
  }
  slot.spawn_error.clear();
  Worker w;
  w.pid = spawned->pid;
  w.slot = slot_index;
  w.channel = std::move(spawned->channel);
  w.started = w.last_heartbeat = now;
  if (config_.supervisor.max_requests > 0) {
    std::uniform_int_distribution<int64_t> jitter(0, config_.supervisor.max_requests_jitter);
    w.recycle_after_requests = static_cast<uint64_t>(config_.supervisor.max_requests + jitter(rng_));
  }
  (as_replacement ? slot.replacement : slot.current) = w.pid;
  log_event(spdlog::level::info,
            fmt::format("started worker {} (pid {}){}", slot_index, w.pid, as_replacement ? " as a replacement" : ""),
            worker_event("worker_spawned", slot_index, w.pid).add("replacement", as_replacement));
  workers_.emplace(w.pid, std::move(w));
  return true;
}

void Supervisor::retire(pid_t pid, int signal, Clock::duration grace) {
  Worker* w = worker(pid);
  if (w == nullptr) return;
  w->state = WorkerState::draining;
  w->kill_at = Clock::now() + grace;
  ::kill(pid, signal);
}

void Supervisor::manage_workers(Clock::time_point now) {
  while (static_cast<int>(slots_.size()) < target_) {
    slots_.emplace_back();
    slots_used_ = std::max(slots_used_, static_cast<int>(slots_.size()));
    start_worker(static_cast<int>(slots_.size()) - 1, false);
  }
  while (static_cast<int>(slots_.size()) > target_) {
    const int index = static_cast<int>(slots_.size()) - 1;
    Slot& slot = slots_.back();
    if (slot.replacement != 0) {
      retire(slot.replacement, SIGTERM, seconds(config_.supervisor.graceful_timeout));
      replacing_slot_ = -1;
    }
    if (slot.current != 0) {
      log_event(spdlog::level::info, fmt::format("scaling down: draining worker {} (pid {})", index, slot.current),
                worker_event("worker_draining", index, slot.current).add("reason", "scale_down"));
      retire(slot.current, SIGTERM, seconds(config_.supervisor.graceful_timeout));
    }
    replace_queue_.erase(std::remove(replace_queue_.begin(), replace_queue_.end(), index), replace_queue_.end());
    slots_.pop_back();
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (slot.current == 0 && slot.restart_at && now >= *slot.restart_at) {
      slot.restart_at.reset();
      ++slot.restarts;
      start_worker(static_cast<int>(i), false);
    }
  }
  if (replace_queue_.empty() && replacing_slot_ < 0 && reloading_) finish_reload(true, "");
}

void Supervisor::queue_replacement(int slot_index, const std::string& why) {
  if (replacing_slot_ == slot_index ||
      std::find(replace_queue_.begin(), replace_queue_.end(), slot_index) != replace_queue_.end()) {
    return;
  }
  log_event(spdlog::level::info, fmt::format("replacing worker {}: {}", slot_index, why),
            event_fields("replacement_queued").add("worker_slot", slot_index).add("reason", why));
  replace_queue_.push_back(slot_index);
}

void Supervisor::advance_replacements(Clock::time_point now) {
  // Recycling: replace workers past their request budget or memory ceiling, through the reload path.
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Worker* w = slots_[i].current ? worker(slots_[i].current) : nullptr;
    if (w == nullptr || w->state != WorkerState::online) continue;
    if (w->recycle_after_requests > 0 && w->requests >= w->recycle_after_requests) {
      queue_replacement(static_cast<int>(i), "served " + std::to_string(w->requests) + " requests (max_requests)");
    } else if (config_.supervisor.max_memory_mb > 0 && w->sample &&
               w->sample->rss_bytes > static_cast<uint64_t>(config_.supervisor.max_memory_mb) * 1024 * 1024) {
      queue_replacement(static_cast<int>(i), "RSS " + std::to_string(w->sample->rss_bytes / (1024 * 1024)) +
                                                 " MiB is over max_memory_mb");
    }
  }
  if (replacing_slot_ >= 0) {
    if (now - replacement_started_ > seconds(config_.supervisor.ready_timeout) + seconds(1)) {
      fail_replacement(replacing_slot_, "the new worker was not ready within ready_timeout");
    }
    return;
  }
  while (!replace_queue_.empty()) {
    const int index = replace_queue_.front();
    replace_queue_.pop_front();
    if (static_cast<size_t>(index) >= slots_.size() || slots_[static_cast<size_t>(index)].current == 0) {
      continue;  // nothing to replace: a restart will start the new build anyway
    }
    replacing_slot_ = index;
    replacement_started_ = now;
    if (!start_worker(index, true)) fail_replacement(index, "cannot start a new worker");
    return;
  }
}

void Supervisor::fail_replacement(int slot_index, const std::string& why) {
  Slot& slot = slots_[static_cast<size_t>(slot_index)];
  if (slot.replacement != 0) {
    ::kill(slot.replacement, SIGKILL);
    if (Worker* w = worker(slot.replacement)) w->state = WorkerState::draining;
    slot.replacement = 0;
  }
  replacing_slot_ = -1;
  replace_queue_.clear();
  log_event(spdlog::level::err, fmt::format("replacing worker {} failed: {}; the old workers keep serving", slot_index, why),
            event_fields("replacement_failed").add("worker_slot", slot_index).add("reason", why));
  if (reloading_) finish_reload(false, "reload aborted: " + why + "; the old workers keep serving");
}

void Supervisor::begin_reload(int client_fd) {
  if (stopping_) {
    if (client_fd >= 0) reply_and_close(client_fd, {{"ok", false}, {"error", "stopping"}});
    return;
  }
  if (client_fd >= 0) reload_waiters_.push_back(client_fd);
  if (reloading_) return;  // joins the reload in progress
  ConfigSources sources;
  sources.file = options_.flags.config_file;
  sources.environment = process_environment();
  sources.flags = options_.flags.overrides;
  auto loaded = load_config(sources);
  if (auto* error = std::get_if<ConfigError>(&loaded)) {
    ++reloads_failed_;
    log_event(spdlog::level::err, "reload refused, the config is invalid: " + error->line(),
              event_fields("reload_refused").add("reason", error->line()));
    return answer_reload_waiters({{"ok", false}, {"error", error->line()}});
  }
  Config next = std::get<Config>(std::move(loaded));
  if (next.http.bind != config_.http.bind || next.http.port != config_.http.port ||
      next.runtime_dir != config_.runtime_dir) {
    const std::string why = "http.bind, http.port and runtime_dir cannot change on reload: restart usersd";
    ++reloads_failed_;
    log_event(spdlog::level::err, "reload refused: " + why, event_fields("reload_refused").add("reason", why));
    return answer_reload_waiters({{"ok", false}, {"error", why}});
  }
  config_ = std::move(next);
  target_ = target_workers();
  reloading_ = true;
  reload_started_ = Clock::now();
  notifier_.notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
  log_event(spdlog::level::info,
            fmt::format("reload: config valid; replacing {} workers one by one with {}", slots_.size(), options_.binary),
            event_fields("reload_started").add("workers", static_cast<int64_t>(slots_.size())).add("binary", options_.binary));
  for (size_t i = 0; i < slots_.size(); ++i) queue_replacement(static_cast<int>(i), "reload");
}

bool Supervisor::old_listeners_open() const {
  return std::any_of(workers_.begin(), workers_.end(), [](const auto& entry) {
    return entry.second.state == WorkerState::draining && entry.second.listening;
  });
}

void Supervisor::finish_reload(bool ok, const std::string& message) {
  if (!reloading_) return;
  // "Reloaded" means only the new build accepts connections: wait until every old listener is closed.
  if (ok && old_listeners_open()) return;
  reloading_ = false;
  ++(ok ? reloads_ok_ : reloads_failed_);
  const auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - reload_started_).count();
  nlohmann::json reply = {{"ok", ok}};
  if (ok) {
    reply["message"] = "reloaded " + std::to_string(slots_.size()) + " workers in " + std::to_string(ms) + " ms";
    reply["duration_ms"] = ms;
    log_event(spdlog::level::info, fmt::format("reload finished: {} workers replaced in {} ms", slots_.size(), ms),
              event_fields("reload_finished").add("workers", static_cast<int64_t>(slots_.size())).add("duration_ms", static_cast<int64_t>(ms)));
  } else {
    log_event(spdlog::level::err, "reload failed: " + message, event_fields("reload_failed").add("reason", message));
    reply["error"] = message;
  }
  notifier_.notify("READY=1\nSTATUS=" + std::to_string(slots_.size()) + " workers online");
  answer_reload_waiters(reply);
}

void Supervisor::answer_reload_waiters(const nlohmann::json& reply) {
  for (int fd : std::vector<int>(reload_waiters_)) reply_and_close(fd, reply);
}

void Supervisor::scale(const std::string& value, int client_fd) {
  int next = target_;
  try {
    size_t used = 0;
    const int n = std::stoi(value, &used);
    if (used != value.size()) throw std::invalid_argument(value);
    next = (value[0] == '+' || value[0] == '-') ? target_ + n : n;
  } catch (const std::exception&) {
    next = -1;
  }
  if (stopping_ || next < 1 || next > 1024) {
    const std::string error = stopping_ ? "stopping" : "workers must end up between 1 and 1024 (got " + value + ")";
    if (client_fd >= 0) reply_and_close(client_fd, {{"ok", false}, {"error", error}});
    return;
  }
  log_event(spdlog::level::info, fmt::format("scaling from {} to {} workers", target_, next),
            event_fields("scale").add("from", target_).add("to", next));
  target_ = next;
  if (client_fd >= 0) scale_waiters_.push_back(client_fd);
  manage_workers(Clock::now());
  answer_scale_waiters();
}

void Supervisor::answer_scale_waiters() {
  if (scale_waiters_.empty() || !all_online()) return;
  for (const auto& [pid, w] : workers_) {
    if (w.state == WorkerState::draining) return;  // scale down is done when the drained workers are gone
  }
  for (int fd : std::vector<int>(scale_waiters_)) reply_and_close(fd, {{"ok", true}, {"workers", slots_.size()}});
}

void Supervisor::begin_stop(bool fast) {
  if (stopping_ && (fast_stop_ || !fast)) return;
  const bool first = !stopping_;
  stopping_ = true;
  fast_stop_ = fast;
  if (first) {
    notifier_.notify("STOPPING=1");
    for (auto& slot : slots_) slot.restart_at.reset();
    replace_queue_.clear();
    finish_reload(false, "stopping");
    for (int fd : std::vector<int>(scale_waiters_)) reply_and_close(fd, {{"ok", false}, {"error", "stopping"}});
  }
  if (fast) {
    log_event(spdlog::level::info, fmt::format("fast stop: stopping {} workers now", workers_.size()),
              event_fields("stop").add("mode", "fast").add("workers", static_cast<int64_t>(workers_.size())));
    drain_at_.reset();
    for (auto& [pid, w] : workers_) {
      w.state = WorkerState::draining;
      w.kill_at = Clock::now() + kFastStopGrace;
      ::kill(pid, SIGQUIT);
    }
    return;
  }
  log_event(spdlog::level::info,
            fmt::format("graceful stop: /healthcheck fails for {} s (drain_delay), then workers drain for up to {} s",
                        config_.supervisor.drain_delay, config_.supervisor.graceful_timeout),
            event_fields("stop").add("mode", "graceful").add("drain_delay_s", config_.supervisor.drain_delay)
                .add("graceful_timeout_s", config_.supervisor.graceful_timeout));
  for (auto& [pid, w] : workers_) {
    if (w.channel.valid()) channel::send(w.channel.get(), {{"type", "health_off"}});
  }
  drain_at_ = Clock::now() + seconds(config_.supervisor.drain_delay);
}

void Supervisor::advance_stop(Clock::time_point now) {
  if (!stopping_ || !drain_at_ || now < *drain_at_) return;
  drain_at_.reset();
  log_event(spdlog::level::info, "closing listeners; waiting for in-flight requests", event_fields("drain"));
  for (auto& [pid, w] : workers_) {
    if (w.state == WorkerState::draining) continue;
    retire(pid, SIGTERM, seconds(config_.supervisor.graceful_timeout));
  }
}

void Supervisor::sample_workers(Clock::time_point now) {
  for (auto& [pid, w] : workers_) {
    auto sample = sample_process(pid);
    if (!sample) continue;
    if (w.sample) w.cpu = cpu_percent(*w.sample, *sample, seconds_since(w.sampled_at, now));
    w.sample = sample;
    w.sampled_at = now;
  }
}

void Supervisor::notify_watchdog(Clock::time_point now) {
  const auto interval = notifier_.watchdog_interval();
  if (!interval || now < next_watchdog_) return;
  next_watchdog_ = now + *interval;
  // Only while healthy: if workers cannot be kept up, systemd's watchdog should notice and act.
  const auto stale = seconds(config_.supervisor.worker_timeout);
  for (const auto& slot : slots_) {
    const Worker* w = slot.current ? &workers_.at(slot.current) : nullptr;
    if (w == nullptr || w->state != WorkerState::online || now - w->last_heartbeat > stale) return;
  }
  if (!slots_.empty()) notifier_.notify("WATCHDOG=1");
}

std::string Supervisor::slot_state(const Slot& slot) const {
  if (slot.current != 0) return state_name(workers_.at(slot.current).state);
  if (!slot.spawn_error.empty()) return "errored";
  if (slot.restart_at) return "waiting-restart";
  return stopping_ ? "stopped" : "starting";
}

nlohmann::json Supervisor::status_json(Clock::time_point now) const {
  auto worker_json = [&](const Worker& w) {
    const auto live = sample_process(w.pid);  // RSS as of now; CPU % comes from the once-a-second samples
    return nlohmann::json{{"pid", w.pid},
                          {"state", state_name(w.state)},
                          {"uptime_s", static_cast<int64_t>(seconds_since(w.started, now))},
                          {"cpu_percent", std::round(w.cpu * 10) / 10},
                          {"rss_bytes", live ? live->rss_bytes : 0},
                          {"requests", w.requests},
                          {"in_flight", w.in_flight},
                          {"connections", w.connections}};
  };
  nlohmann::json workers = nlohmann::json::array();
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& slot = slots_[i];
    nlohmann::json entry = slot.current ? worker_json(workers_.at(slot.current))
                                        : nlohmann::json{{"pid", nullptr}, {"uptime_s", 0}, {"cpu_percent", 0},
                                                         {"rss_bytes", 0}, {"requests", 0}, {"in_flight", 0},
                                                         {"connections", 0}};
    entry["slot"] = i;
    entry["state"] = slot_state(slot);
    // Every request this slot's workers answered, the restarted and replaced ones included (shared memory).
    entry["requests_total"] = metrics_ ? nlohmann::json(slot_requests_total(metrics_->region().slots[i])) : nlohmann::json(nullptr);
    entry["restarts"] = slot.restarts;
    entry["last_exit"] = slot.last_exit.empty() ? nlohmann::json(nullptr) : nlohmann::json(slot.last_exit);
    if (slot.restart_at) {
      entry["restart_in_ms"] = std::max<int64_t>(0, std::chrono::duration_cast<milliseconds>(*slot.restart_at - now).count());
    }
    if (!slot.spawn_error.empty()) entry["error"] = slot.spawn_error;
    workers.push_back(std::move(entry));
  }
  nlohmann::json retiring = nlohmann::json::array();
  for (const auto& [pid, w] : workers_) {
    const Slot* slot = static_cast<size_t>(w.slot) < slots_.size() ? &slots_[static_cast<size_t>(w.slot)] : nullptr;
    const bool listed = slot && (slot->current == pid);
    if (!listed) {
      auto entry = worker_json(w);
      entry["slot"] = w.slot;
      retiring.push_back(std::move(entry));
    }
  }
  const auto self = sample_process(getpid());
  return {{"supervisor",
           {{"pid", getpid()},
            {"version", version()},
            {"binary", options_.binary},
            {"config_file", config_.config_file},
            {"env", config_.env},
            {"bind", config_.http.bind},
            {"port", config_.http.port},
            {"store", redact_url(config_.storage.url)},
            {"runtime_dir", config_.runtime_dir},
            {"state", stopping_ ? "stopping" : reloading_ ? "reloading" : startup_complete_ ? "running" : "starting"},
            {"uptime_s", static_cast<int64_t>(seconds_since(started_, now))},
            {"started_at", std::chrono::duration_cast<seconds>(started_wall_.time_since_epoch()).count()},
            {"workers_target", target_},
            {"rss_bytes", self ? self->rss_bytes : 0},
            {"tcp_migrate_req", tcp_migrate_req_},
            {"reloads", {{"ok", reloads_ok_}, {"failed", reloads_failed_}}},
            {"metrics_url", admin_ ? nlohmann::json("http://" + (config_.admin.bind.find(':') != std::string::npos
                                                                      ? "[" + config_.admin.bind + "]"
                                                                      : config_.admin.bind) +
                                                     ":" + std::to_string(config_.admin.port) + "/metrics")
                                   : nlohmann::json(nullptr)}}},
          {"workers", std::move(workers)},
          {"other_processes", std::move(retiring)}};
}

void Supervisor::publish_figures() {
  if (!admin_) return;
  static const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  SupervisorFigures f;
  f.version = version();
  f.workers_target = target_;
  f.slots_used = slots_used_;
  f.reloads_ok = reloads_ok_;
  f.reloads_failed = reloads_failed_;
  f.log_lines_dropped = dropped_log_lines();
  if (const auto self = sample_process(getpid())) {
    f.rss_bytes = self->rss_bytes;
    f.cpu_seconds = static_cast<double>(self->cpu_ticks) / ticks_per_second;
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    WorkerFigures wf;
    wf.slot = static_cast<int>(i);
    wf.restarts = static_cast<uint64_t>(slots_[i].restarts);
    if (const Worker* w = slots_[i].current ? worker(slots_[i].current) : nullptr) {
      wf.up = w->state == WorkerState::online;
      if (w->sample) {
        wf.rss_bytes = w->sample->rss_bytes;
        wf.cpu_seconds = static_cast<double>(w->sample->cpu_ticks) / ticks_per_second;
      }
    }
    f.workers.push_back(wf);
  }
  // In-flight requests and connections of every live process, replaced ones still draining included.
  for (const auto& [pid, w] : workers_) {
    if (static_cast<size_t>(w.slot) < f.workers.size()) {
      f.workers[static_cast<size_t>(w.slot)].in_flight += w.in_flight;
      f.workers[static_cast<size_t>(w.slot)].connections += w.connections;
    }
  }
  std::lock_guard lock(figures_mutex_);
  figures_ = std::move(f);
}

// Runs on the admin thread.
std::string Supervisor::render_metrics() {
  SupervisorFigures f;
  {
    std::lock_guard lock(figures_mutex_);
    f = figures_;
  }
  return render_prometheus(metrics_ ? &metrics_->region() : nullptr, f);
}

void Supervisor::cleanup() {
  log_event(spdlog::level::info, fmt::format("supervisor exiting (code {})", exit_code_),
            event_fields("supervisor_exiting").add("exit_code", exit_code_));
  if (admin_) admin_->stop();
  if (!control_path_.empty()) ::unlink(control_path_.c_str());
  while (!control_clients_.empty()) close_client(control_clients_.begin()->first);
  pidfile_.reset();
  report_startup("error: stopped during start-up");
  flush_logs();
}

}  // namespace

int run_supervisor(SupervisorOptions options) {
  Supervisor supervisor(std::move(options));
  return supervisor.run();
}

}  // namespace usersd
