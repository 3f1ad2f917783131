// The `usersd` subcommands. Each returns the process exit code.
#pragma once

#include <optional>
#include <string>

#include "common/config.hpp"

namespace usersd {

// Flags shared by subcommands that read the config (--config plus overrides of single keys).
struct ConfigFlags {
  std::optional<std::string> config_file;
  FlagOverrides overrides;
};

struct StartOptions {
  ConfigFlags config;
  bool foreground = false;
};

struct UserAddOptions {
  ConfigFlags config;
  std::string email;
  std::string first_name;
  std::string last_name;
  bool admin = false;
};

struct LegacyImportOptions {
  ConfigFlags config;
  std::string from;  // mongodb://.../<the Node.js service's database>
  bool dry_run = false;
};

struct SetPasswordOptions {
  ConfigFlags config;
  std::string email;
};

int run_start(const StartOptions& options);
int run_worker_command(const ConfigFlags& flags, int slot);
int run_status(const ConfigFlags& flags, bool as_json);
int run_reload(const ConfigFlags& flags);
int run_stop(const ConfigFlags& flags, bool fast);
int run_scale(const ConfigFlags& flags, const std::string& value);
int run_export(const ConfigFlags& flags);
int run_import(const ConfigFlags& flags);
int run_config_check(const ConfigFlags& flags);
int run_user_add(const UserAddOptions& options);
int run_user_set_password(const SetPasswordOptions& options);
int run_import_legacy(const LegacyImportOptions& options);

// Loads the config or prints its one-line error to stderr (nullopt).
std::optional<Config> load_config_or_report(const ConfigFlags& flags, bool resolve_secret = true);

}  // namespace usersd
