// Process-wide logging (spdlog). Servers (supervisor, workers) log asynchronously, as JSON lines on stdout by
// default (journald, the CloudWatch agent), or to `log.file`, which SIGUSR1 reopens after logrotate.
// The CLI logs synchronously to stderr, human-readable: stdout belongs to its output.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/common.h>

#include "common/config.hpp"
#include "common/json_text.hpp"

namespace usersd {

// Installs the server logger. `component` is "supervisor" or "worker"; slot >= 0 for workers.
// Lines go through a bounded queue to one writer thread; when the queue is full the OLDEST queued line is
// dropped (counted by dropped_log_lines()): a slow disk or journald never makes a request wait.
void setup_logging(const LogConfig& config, const std::string& component, int slot = -1);

// Synchronous, human-readable, stderr (for CLI commands before and instead of a server logger).
void setup_cli_logging(const std::string& level);

// Reopens the log file after rotation (called outside signal context). No-op when logging to stdout.
void reopen_log_file();

// Waits (at most ~1 s) until every line logged so far is written: call before _exit.
void flush_logs();

// Lines dropped because the queue was full, since setup.
uint64_t dropped_log_lines();

// Every line this thread logs carries this request id (empty: none) until it is changed.
void set_log_request_id(std::string_view request_id);

// A line with structured fields (the access log, supervisor events): `message` plus `fields` merged into
// the JSON object (text format: appended as {...}).
void log_event(spdlog::level::level_enum level, std::string_view message, const JsonFields& fields);

}  // namespace usersd
