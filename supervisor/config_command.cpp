// `usersd config check` and the config loading every subcommand shares.
#include <iostream>

#include "supervisor/commands.hpp"

namespace usersd {

std::optional<Config> load_config_or_report(const ConfigFlags& flags, bool resolve_secret) {
  ConfigSources sources;
  sources.file = flags.config_file;
  sources.environment = process_environment();
  sources.flags = flags.overrides;
  sources.resolve_secret = resolve_secret;
  auto loaded = load_config(sources);
  if (auto* error = std::get_if<ConfigError>(&loaded)) {
    std::cerr << "usersd: " << error->line() << "\n";
    return std::nullopt;
  }
  return std::get<Config>(std::move(loaded));
}

int run_config_check(const ConfigFlags& flags) {
  auto config = load_config_or_report(flags);
  if (!config) return 1;
  std::cout << config_to_redacted_json(*config).dump(2) << "\n";
  return 0;
}

}  // namespace usersd
