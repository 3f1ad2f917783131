// Everything a worker's handlers share: the effective config and the long-lived services built from it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "common/attempt_limiter.hpp"
#include "common/client_address.hpp"
#include "common/config.hpp"
#include "common/jwt.hpp"
#include "common/password.hpp"
#include "common/user_store.hpp"
#include "worker/serving_state.hpp"
#include "worker/worker_metrics.hpp"

namespace usersd {

struct App {
  Config config;
  std::unique_ptr<UserStore> store;
  std::unique_ptr<PasswordHasher> hasher;
  JwtSettings jwt;
  // Abuse-limit counters: shared with the sibling workers when the supervisor handed us its table.
  std::unique_ptr<SharedCounterTable> limits_table;
  std::unique_ptr<AttemptLimiter> attempts;
  TrustedProxies trusted_proxies;
  int64_t started_ms = 0;
  ServingState serving;
  std::unique_ptr<WorkerMetrics> metrics;  // null: metrics disabled (admin.port 0) or no supervisor
};

// Builds the services from a validated config, opening the store. Errc::unavailable when the store cannot open.
// Without `limits_table` the abuse limits count in a table private to this process.
Result<std::unique_ptr<App>> make_app(const Config& config, std::optional<SharedCounterTable> limits_table = {});

JwtSettings jwt_settings_from(const Config& config);
PasswordPolicy password_policy_from(const Config& config);

}  // namespace usersd
