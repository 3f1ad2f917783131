#include "worker/worker_main.hpp"

#include <csignal>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

#include "worker/app.hpp"
#include "worker/http_server.hpp"

namespace usersd {
namespace {

constexpr auto kGracefulTimeout = std::chrono::seconds(30);

// Signals are blocked in every thread and taken synchronously by one watcher thread: no async-signal-safety traps.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT}) sigaddset(&set, sig);
  return set;
}

}  // namespace

int run_worker(const Config& config, const WorkerOptions& options) {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto app = make_app(config);
  if (!app) {
    spdlog::critical("cannot open store {}: {}", redact_url(config.storage.url), app.error().message);
    return 1;
  }
  HttpServer server(*app.value());
  std::string error;
  if (!server.bind(options.reuse_port, error)) {
    spdlog::critical("{}", error);
    return 1;
  }
  if (config.jwt.secret_source == "ephemeral") {
    spdlog::warn("no JWT secret configured: using an ephemeral one (tokens die with this process); "
                 "set USERSD_JWT_SECRET or jwt.secret_file");
  }
  spdlog::info("usersd {} listening on {}:{} ({} env, store {})", USERSD_VERSION, config.http.bind, config.http.port,
               config.env, app.value()->store->describe());

  std::thread([&server, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("received {}, finishing in-flight requests", strsignal(sig));
    server.stop();
    std::this_thread::sleep_for(kGracefulTimeout);
    spdlog::warn("graceful timeout reached, exiting with requests in flight");
    _exit(0);
  }).detach();

  const bool served = server.serve();
  spdlog::info("stopped");
  return served ? 0 : 1;
}

}  // namespace usersd
