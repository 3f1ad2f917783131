#include "worker/app.hpp"

#include "common/store_factory.hpp"
#include "common/time_format.hpp"

namespace usersd {

JwtSettings jwt_settings_from(const Config& config) {
  JwtSettings s;
  s.secret = config.jwt.secret;
  s.issuer = config.jwt.issuer;
  s.audience = config.jwt.audience;
  s.ttl_seconds = config.jwt.ttl;
  return s;
}

PasswordPolicy password_policy_from(const Config& config) {
  PasswordPolicy p;
  p.memlimit_kib = static_cast<uint64_t>(config.password.memlimit_kib);
  p.opslimit = static_cast<uint64_t>(config.password.opslimit);
  p.max_concurrent = static_cast<unsigned>(config.password.max_concurrent_hashes);
  return p;
}

Result<std::unique_ptr<App>> make_app(const Config& config) {
  auto store = open_store(config.storage, config.http.threads);
  if (!store) return store.error();
  auto app = std::make_unique<App>();
  app->config = config;
  app->store = std::move(store).value();
  app->hasher = std::make_unique<PasswordHasher>(password_policy_from(config));
  app->jwt = jwt_settings_from(config);
  // Validated when the config was loaded.
  app->trusted_proxies = std::get<TrustedProxies>(TrustedProxies::parse(config.http.trusted_proxies));
  app->started_ms = now_ms();
  return app;
}

}  // namespace usersd
