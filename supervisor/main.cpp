// usersd: one binary; the subcommand decides whether this process is a CLI, a supervisor or a worker.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <mongoc/mongoc.h>

#include <cstdlib>

#include <iostream>

#include "common/logging.hpp"
#include "common/version.hpp"
#include "supervisor/commands.hpp"

namespace {

using usersd::ConfigFlags;

// Registers `--flag VALUE` so that it overrides dotted config key `key`.
void add_override(CLI::App& cmd, ConfigFlags& flags, const std::string& flag, const std::string& key,
                  const std::string& help) {
  cmd.add_option_function<std::string>(flag, [&flags, key](const std::string& v) { flags.overrides[key] = v; }, help);
}

void add_config_file(CLI::App& cmd, ConfigFlags& flags) {
  cmd.add_option_function<std::string>("-c,--config", [&flags](const std::string& v) { flags.config_file = v; },
                                       "Config file (JSON); default: $USERSD_CONFIG if set");
}

void add_store(CLI::App& cmd, ConfigFlags& flags) {
  add_override(cmd, flags, "--store", "storage.url",
               "Store URL: sqlite:///abs/path/usersd.db (default: under data_dir) or mongodb://...");
}


// Debian's libmongoc initialises when it is loaded and keeps per-process counters in
// /dev/shm/mongoc-<pid>, removed only by a clean exit. Workers leave with _exit and a killed process
// leaves its file behind, so files pile up, and a later process whose pid was recycled makes the driver
// print a warning on stderr. usersd never reads those counters: the driver skips them when
// MONGOC_DISABLE_SHM is set, which it reads at load time, hence one re-exec with it set.
void disable_driver_shared_memory(char** argv) {
  if (std::getenv("MONGOC_DISABLE_SHM") != nullptr) return;
  ::setenv("MONGOC_DISABLE_SHM", "1", 1);
  mongoc_cleanup();  // removes this image's counters file; exec would skip the destructor that does it
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the counters, as before
  mongoc_init();
}

}  // namespace

int main(int argc, char** argv) {
  disable_driver_shared_memory(argv);
  // Until a command sets up its own logging, log lines (e.g. from the MongoDB driver) go to stderr:
  // stdout belongs to the command's output (`usersd export > users.jsonl`).
  usersd::setup_cli_logging("warn");
  CLI::App app{"usersd: a Users API server with its own process supervisor"};
  app.set_version_flag("--version", std::string("usersd ") + usersd::version());
  app.require_subcommand(1);

  usersd::StartOptions start;
  auto* start_cmd = app.add_subcommand("start", "Start the server (supervisor and workers)");
  add_config_file(*start_cmd, start.config);
  start_cmd->add_flag("--foreground", start.foreground, "Stay in the foreground (for systemd, containers, make run)");
  add_override(*start_cmd, start.config, "--port", "http.port", "TCP port to listen on");
  add_override(*start_cmd, start.config, "--bind", "http.bind", "Address to listen on, e.g. 127.0.0.1 or ::");
  add_override(*start_cmd, start.config, "--workers", "workers", "Worker processes: a number or auto");
  add_store(*start_cmd, start.config);
  add_override(*start_cmd, start.config, "--runtime-dir", "runtime_dir", "Directory for the pidfile and control socket");
  add_override(*start_cmd, start.config, "--env", "env", "development or production");

  auto* config_cmd = app.add_subcommand("config", "Work with the configuration");
  config_cmd->require_subcommand(1);
  ConfigFlags check_flags;
  auto* check_cmd = config_cmd->add_subcommand("check", "Validate the config and print the effective values (secrets redacted)");
  add_config_file(*check_cmd, check_flags);

  auto* user_cmd = app.add_subcommand("user", "Manage users directly in the store");
  user_cmd->require_subcommand(1);
  usersd::UserAddOptions user_add;
  auto* add_cmd = user_cmd->add_subcommand("add", "Create a user; the password is read from standard input");
  add_cmd->add_option("--email", user_add.email, "Email address")->required();
  add_cmd->add_option("--first-name", user_add.first_name, "First name")->required();
  add_cmd->add_option("--last-name", user_add.last_name, "Last name")->required();
  add_cmd->add_flag("--admin", user_add.admin, "Give the user the admin role");
  add_config_file(*add_cmd, user_add.config);
  add_store(*add_cmd, user_add.config);

  // Commands that talk to a running supervisor find it through runtime_dir (from --config / --runtime-dir).
  auto add_runtime_flags = [](CLI::App& cmd, ConfigFlags& flags) {
    add_config_file(cmd, flags);
    add_override(cmd, flags, "--runtime-dir", "runtime_dir", "Directory of the supervisor's control socket");
  };
  ConfigFlags status_flags, reload_flags, stop_flags, scale_flags;
  bool status_json = false, stop_fast = false;
  std::string scale_value;
  auto* status_cmd = app.add_subcommand("status", "Show the supervisor and its workers (like pm2 ls)");
  add_runtime_flags(*status_cmd, status_flags);
  status_cmd->add_flag("--json", status_json, "Print the status as JSON");
  auto* reload_cmd = app.add_subcommand("reload", "Re-read the config and replace workers one by one, with no failed requests");
  add_runtime_flags(*reload_cmd, reload_flags);
  auto* stop_cmd = app.add_subcommand("stop", "Stop gracefully (drain) and wait until the supervisor is gone");
  add_runtime_flags(*stop_cmd, stop_flags);
  stop_cmd->add_flag("--fast", stop_fast, "Do not wait for in-flight requests");
  auto* scale_cmd = app.add_subcommand("scale", "Set the number of workers: N, +N or -N");
  add_runtime_flags(*scale_cmd, scale_flags);
  scale_cmd->add_option("workers", scale_value, "N, +N or -N")->required();

  usersd::SetPasswordOptions set_password;
  auto* set_password_cmd = user_cmd->add_subcommand(
      "set-password", "Set a user's password (e.g. one imported without one); read from standard input");
  set_password_cmd->add_option("--email", set_password.email, "Email address of the user")->required();
  add_config_file(*set_password_cmd, set_password.config);
  add_store(*set_password_cmd, set_password.config);

  ConfigFlags export_flags, import_flags;
  auto* export_cmd = app.add_subcommand("export", "Write every user (hashes, ids, timestamps included) as JSON lines to stdout");
  add_config_file(*export_cmd, export_flags);
  add_store(*export_cmd, export_flags);
  auto* import_cmd = app.add_subcommand("import", "Read users written by `usersd export` from stdin (validated first, idempotent)");
  add_config_file(*import_cmd, import_flags);
  add_store(*import_cmd, import_flags);

  usersd::LegacyImportOptions legacy;
  auto* legacy_cmd = app.add_subcommand(
      "import-legacy", "Import the Node.js users service's MongoDB data (authusers + users); idempotent");
  legacy_cmd->add_option("--from", legacy.from, "mongodb://host/<database of the Node.js service>")->required();
  legacy_cmd->add_flag("--dry-run", legacy.dry_run, "Report what would be imported; write nothing");
  add_config_file(*legacy_cmd, legacy.config);
  add_store(*legacy_cmd, legacy.config);

  // Internal: the supervisor execs this for each worker.
  ConfigFlags worker_flags;
  int worker_slot = 0;
  auto* worker_cmd = app.add_subcommand("worker", "")->group("");
  add_config_file(*worker_cmd, worker_flags);
  worker_cmd->add_option("--slot", worker_slot);
  worker_cmd->add_option_function<std::vector<std::string>>(
      "--set",
      [&worker_flags](const std::vector<std::string>& items) {
        for (const auto& item : items) {
          const auto eq = item.find('=');
          if (eq != std::string::npos) worker_flags.overrides[item.substr(0, eq)] = item.substr(eq + 1);
        }
      },
      "key=value config override");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*start_cmd) return usersd::run_start(start);
  if (*check_cmd) return usersd::run_config_check(check_flags);
  if (*add_cmd) return usersd::run_user_add(user_add);
  if (*set_password_cmd) return usersd::run_user_set_password(set_password);
  if (*legacy_cmd) return usersd::run_import_legacy(legacy);
  if (*status_cmd) return usersd::run_status(status_flags, status_json);
  if (*reload_cmd) return usersd::run_reload(reload_flags);
  if (*stop_cmd) return usersd::run_stop(stop_flags, stop_fast);
  if (*scale_cmd) return usersd::run_scale(scale_flags, scale_value);
  if (*export_cmd) return usersd::run_export(export_flags);
  if (*import_cmd) return usersd::run_import(import_flags);
  if (*worker_cmd) return usersd::run_worker_command(worker_flags, worker_slot);
  return 2;
}
