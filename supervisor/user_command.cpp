// `usersd user add`: how the first admin gets an account. `usersd user set-password`: how an account
// without a password (a directory record from the Node.js service, see import-legacy) gets one.
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "common/ids.hpp"
#include "common/password.hpp"
#include "common/store_factory.hpp"
#include "common/time_format.hpp"
#include "common/user_input.hpp"
#include "supervisor/commands.hpp"
#include "worker/app.hpp"

namespace usersd {
namespace {

// One line from stdin; echo is switched off when a person is typing it.
std::string read_password() {
  const bool tty = isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (tty) {
    std::cerr << "Password: " << std::flush;
    tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string password;
  std::getline(std::cin, password);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << "\n";
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return password;
}

}  // namespace

int run_user_add(const UserAddOptions& options) {
  auto config = load_config_or_report(options.config, /*resolve_secret=*/false);
  if (!config) return 1;
  const nlohmann::json body = {{"email", options.email},
                               {"firstName", options.first_name},
                               {"lastName", options.last_name},
                               {"password", read_password()},
                               {"role", options.admin ? "admin" : "user"}};
  PasswordHasher hasher(password_policy_from(*config));
  UserInput input;
  const auto errors = parse_user_input(body, UserOperation::create, true,
                                       {hasher.policy().min_length, hasher.policy().max_length}, input);
  if (!errors.empty()) {
    for (const auto& e : errors) std::cerr << "usersd: " << e.field << ": " << e.message << "\n";
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(config->data_dir, ec);  // the first admin may come before the first start
  auto store = open_store(config->storage, 1);
  if (!store) {
    std::cerr << "usersd: cannot open store " << redact_url(config->storage.url) << ": " << store.error().message << "\n";
    return 1;
  }
  User user;
  user.id = new_object_id();
  apply_user_input(input, UserOperation::create, user);
  user.role = options.admin ? Role::admin : Role::user;
  user.password_hash = hasher.hash(*input.password);
  user.created_at_ms = user.updated_at_ms = now_ms();
  auto created = store.value()->create(user);
  if (!created) {
    std::cerr << "usersd: " << (created.error().code == Errc::conflict ? "a user with this email already exists"
                                                                        : created.error().message)
              << "\n";
    return 1;
  }
  std::cout << created.value().id << "\n";
  return 0;
}

int run_user_set_password(const SetPasswordOptions& options) {
  auto config = load_config_or_report(options.config, /*resolve_secret=*/false);
  if (!config) return 1;
  PasswordHasher hasher(password_policy_from(*config));
  const std::string password = read_password();
  const size_t length = utf8_length(password);
  if (length < hasher.policy().min_length || length > hasher.policy().max_length) {
    std::cerr << "usersd: password: must be " << hasher.policy().min_length << " to " << hasher.policy().max_length
              << " characters\n";
    return 1;
  }
  auto store = open_store(config->storage, 1);
  if (!store) {
    std::cerr << "usersd: cannot open store " << redact_url(config->storage.url) << ": " << store.error().message << "\n";
    return 1;
  }
  const std::string hash = hasher.hash(password);
  // The version guard can lose to a concurrent API write: read again and retry a few times.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto user = store.value()->find_by_email(normalize_email(options.email));
    if (!user) {
      std::cerr << "usersd: " << (user.error().code == Errc::not_found ? "no user with this email" : user.error().message)
                << "\n";
      return 1;
    }
    user.value().password_hash = hash;
    user.value().updated_at_ms = now_ms();
    auto updated = store.value()->update(user.value());
    if (updated) {
      std::cout << updated.value().id << "\n";
      return 0;
    }
    if (updated.error().code != Errc::precondition_failed) {
      std::cerr << "usersd: " << updated.error().message << "\n";
      return 1;
    }
  }
  std::cerr << "usersd: the user kept changing; try again\n";
  return 1;
}

}  // namespace usersd
