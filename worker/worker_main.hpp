// Running one worker process: build the app, bind, serve until told to stop.
#pragma once

#include "common/config.hpp"

namespace usersd {

struct WorkerOptions {
  bool reuse_port = false;  // true when started by the supervisor next to sibling workers
};

// Serves until SIGTERM/SIGINT/SIGQUIT; returns the process exit code.
int run_worker(const Config& config, const WorkerOptions& options);

}  // namespace usersd
