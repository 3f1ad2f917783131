// The supervisor: one single-threaded event loop owning the pidfile lock, the control socket and the
// worker table. Modelled on gunicorn's arbiter: signals are queued (signalfd) and handled in the loop,
// then hung workers are killed and the worker count is brought back to target.
#pragma once

#include <string>

#include "common/config.hpp"
#include "supervisor/commands.hpp"

namespace usersd {

struct SupervisorOptions {
  Config config;
  ConfigFlags flags;        // re-read on reload; passed on to every worker
  std::string binary;       // absolute path exec'd for each worker (so reload picks up a new build)
  int readiness_fd = -1;    // daemon mode: gets "ok\n" or "error: <reason>\n" once startup finishes
};

// Runs until stopped; returns the process exit code.
int run_supervisor(SupervisorOptions options);

}  // namespace usersd
