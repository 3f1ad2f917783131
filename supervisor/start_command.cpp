// `usersd start`.
#include <sys/stat.h>

#include <filesystem>
#include <iostream>

#include <spdlog/spdlog.h>

#include "common/logging.hpp"
#include "supervisor/commands.hpp"
#include "worker/worker_main.hpp"

namespace usersd {

int run_start(const StartOptions& options) {
  auto config = load_config_or_report(options.config);
  if (!config) return 1;
  setup_logging(config->log, "worker");
  std::error_code ec;
  std::filesystem::create_directories(config->data_dir, ec);
  if (ec) {
    std::cerr << "usersd: cannot create data_dir " << config->data_dir << ": " << ec.message() << "\n";
    return 1;
  }
  if (!options.foreground) {
    std::cerr << "usersd: only --foreground is available until the supervisor lands\n";
    return 2;
  }
  return run_worker(*config, WorkerOptions{});
}

}  // namespace usersd
