#include "worker/worker_main.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <thread>
#include <variant>

#include <spdlog/spdlog.h>

#include "common/logging.hpp"
#include "common/shared_counter_table.hpp"
#include "common/version.hpp"
#include "worker/app.hpp"
#include "worker/channel.hpp"
#include "worker/http_server.hpp"
#include "worker/instrumented_store.hpp"

namespace usersd {
namespace {

using std::chrono::seconds;

constexpr auto kFastExitGrace = std::chrono::milliseconds(900);
constexpr int kHeartbeatIntervalMs = 1000;
// The kernel sends this when the supervisor dies (PR_SET_PDEATHSIG): exit within a second, no orphans.
constexpr int kParentDiedSignal = SIGUSR2;

// Signals are blocked in every thread and taken synchronously by one watcher thread: no async-signal-safety traps.
sigset_t worker_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, kParentDiedSignal}) sigaddset(&set, sig);
  return set;
}

// Exits the process after `grace` even if connections are still open (the caller already began draining).
void exit_after(std::chrono::milliseconds grace, const char* why) {
  std::thread([grace, why] {
    std::this_thread::sleep_for(grace);
    spdlog::warn("{}: exiting with connections still open", why);
    flush_logs();
    _exit(0);
  }).detach();
}

// Sends the counters; also the last word of a worker that is about to exit.
void send_heartbeat(const App& app) {
  const ServingState& state = app.serving;
  if (app.metrics) app.metrics->record_dropped_log_lines(dropped_log_lines());
  channel::send(channel::kChannelFd, {{"type", "heartbeat"},
                                      {"requests", state.requests.load()},
                                      {"in_flight", state.in_flight.load()},
                                      {"connections", state.connections.load()}});
}

// Begins draining; a supervised worker then tells the supervisor its listener is closed, which is what
// `usersd reload` waits for before it reports the new build as the only one serving.
void drain(HttpServer& server, bool supervised) {
  server.begin_drain();
  if (supervised) channel::send(channel::kChannelFd, {{"type", "listener_closed"}});
}

void watch_signals(HttpServer& server, const Config& config, sigset_t signals, bool supervised) {
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      reopen_log_file();
      continue;
    }
    if (sig == SIGTERM) {
      spdlog::info("SIGTERM: draining (closing listener, finishing in-flight requests)");
      drain(server, supervised);
      exit_after(seconds(config.supervisor.graceful_timeout), "graceful_timeout reached");
    } else {
      spdlog::info("{}: fast stop", sig == kParentDiedSignal ? "supervisor is gone" : strsignal(sig));
      drain(server, supervised);
      exit_after(kFastExitGrace, "fast stop");
    }
  }
}

// Supervised workers: announce readiness, heartbeat, obey health_off, and leave when the supervisor does.
void talk_to_supervisor(HttpServer& server, App& app) {
  ServingState& state = app.serving;
  channel::send(channel::kChannelFd, {{"type", "ready"}});
  while (true) {
    pollfd pfd{channel::kChannelFd, POLLIN, 0};
    const int n = ::poll(&pfd, 1, kHeartbeatIntervalMs);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      auto message = channel::receive(channel::kChannelFd);
      if (!message) {
        spdlog::warn("supervisor channel closed: supervisor is gone, fast stop");
        server.begin_drain();
        exit_after(kFastExitGrace, "supervisor gone");
        return;
      }
      if (message->value("type", "") == "health_off") {
        state.health_off = true;
        spdlog::info("healthcheck now answers 503 (stop in progress)");
      }
      continue;
    }
    send_heartbeat(app);
  }
}

}  // namespace

int run_worker(const Config& config, const WorkerOptions& options) {
  if (options.supervised) {
    prctl(PR_SET_PDEATHSIG, kParentDiedSignal);
    // The supervisor may have died between fork and prctl; then we were re-parented already.
    if (getppid() == 1) return 1;
  }
  const sigset_t signals = worker_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::optional<SharedCounterTable> limits_table;
  if (options.supervised) {
    auto attached = SharedCounterTable::attach(kLimitsTableFd);
    if (auto* error = std::get_if<std::string>(&attached)) {
      spdlog::critical("cannot map the shared limits table (fd {}): {}", kLimitsTableFd, *error);
      return 1;
    }
    limits_table.emplace(std::move(std::get<SharedCounterTable>(attached)));
    ::close(kLimitsTableFd);  // mapped; the fd is not needed any more
  }
  auto app = make_app(config, std::move(limits_table));
  if (!app) {
    spdlog::critical("cannot open store {}: {}", redact_url(config.storage.url), app.error().message);
    return 1;
  }
  // Metrics go to this slot's block of the supervisor's shared memory; the store is timed from here on.
  app.value()->metrics = WorkerMetrics::attach(options.slot);
  if (app.value()->metrics) app.value()->store = instrument_store(std::move(app.value()->store), *app.value()->metrics);
  HttpServer server(*app.value());
  std::string error;
  if (!server.bind(options.supervised, error)) {
    spdlog::critical("{}", error);
    return 1;
  }
  if (!options.supervised && config.jwt.secret_source == "ephemeral") {
    spdlog::warn("no JWT secret configured: using an ephemeral one (tokens die with this process); "
                 "set USERSD_JWT_SECRET or jwt.secret_file");
  }
  spdlog::info("worker {} listening on {}:{} (usersd {}, store {})", options.slot, config.http.bind, config.http.port,
               version(), app.value()->store->describe());

  std::thread(watch_signals, std::ref(server), std::cref(config), signals, options.supervised).detach();
  if (options.supervised) std::thread(talk_to_supervisor, std::ref(server), std::ref(*app.value())).detach();

  const bool served = server.serve();
  if (options.supervised) send_heartbeat(*app.value());
  spdlog::info("worker {} stopped after {} requests", options.slot, app.value()->serving.requests.load());
  flush_logs();
  // Detached threads still reference the server: leave without running destructors.
  _exit(served ? 0 : 1);
}

}  // namespace usersd
