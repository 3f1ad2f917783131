// Running one worker process: build the app, bind, serve until told to stop.
#pragma once

#include "common/config.hpp"

namespace usersd {

struct WorkerOptions {
  int slot = 0;
  bool supervised = false;  // started by the supervisor: SO_REUSEPORT, channel on fd 3, die with the parent
};

// Serves until a stop signal (TERM graceful, INT/QUIT fast) or, when supervised, until the supervisor is gone.
// Returns the process exit code.
int run_worker(const Config& config, const WorkerOptions& options);

}  // namespace usersd
