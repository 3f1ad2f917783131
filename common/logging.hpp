// Process-wide logging setup (spdlog): text or JSON lines, to stderr or a file that SIGUSR1 can reopen.
#pragma once

#include <string>

#include "common/config.hpp"

namespace usersd {

// Installs the default logger. `component` names the process role ("supervisor", "worker 2", "cli").
void setup_logging(const LogConfig& config, const std::string& component);

// Reopens the log file after rotation (called outside signal context).
void reopen_log_file();

}  // namespace usersd
