// `usersd worker` (internal): what the supervisor execs for each worker slot.
#include "common/logging.hpp"
#include "supervisor/commands.hpp"
#include "worker/worker_main.hpp"

namespace usersd {

int run_worker_command(const ConfigFlags& flags, int slot) {
  auto config = load_config_or_report(flags);
  if (!config) return 1;
  setup_logging(config->log, "worker", slot);
  return run_worker(*config, WorkerOptions{slot, /*supervised=*/true});
}

}  // namespace usersd
