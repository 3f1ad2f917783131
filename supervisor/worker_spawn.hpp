// Starting a worker process: fork, then exec the installed binary as `usersd worker`, with the
// supervisor channel on fd 3, the metrics shared memory on fd 4 and the shared limits table on fd 5.
// Exec (not just fork) is what lets a reload pick up a new build.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include "supervisor/unique_fd.hpp"

namespace usersd {

struct WorkerLaunch {
  std::string binary;                        // absolute path of the installed usersd
  int slot = 0;
  std::optional<std::string> config_file;    // absolute
  std::map<std::string, std::string> overrides;  // dotted key -> value, as given on the command line
  int metrics_fd = -1;                       // the metrics memfd, given to the worker as fd 4 (-1: none)
  int limits_table_fd = -1;                  // shared abuse-limit counters, given to the worker as fd 5
};

struct SpawnedWorker {
  pid_t pid = -1;
  UniqueFd channel;  // the supervisor's end
};

// Returns nullopt (with `error`) when fork or socketpair fails. Exec failures show up as the child
// exiting with status 127 and a log line.
std::optional<SpawnedWorker> spawn_worker(const WorkerLaunch& launch, std::string& error);

// "exit status 3", "killed by SIGKILL", ... for logs and `usersd status`.
std::string describe_wait_status(int status);

}  // namespace usersd
