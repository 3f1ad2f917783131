// POST /v1/auth/register and POST /v1/auth/login.
#include <spdlog/spdlog.h>

#include "common/ids.hpp"
#include "common/time_format.hpp"
#include "common/user_input.hpp"
#include "worker/problem.hpp"
#include "worker/routes.hpp"
#include "worker/user_json.hpp"

namespace usersd {
namespace {

const MediaTypes kJsonOnly = {"application/json"};

void send_created(httplib::Response& res, const User& user) {
  res.set_header("Location", user_path(user.id));
  res.set_header("ETag", etag_of(user));
  send_json(res, 201, user_to_json(user));
}

PasswordLengths password_lengths(const App& app) {
  return {app.hasher->policy().min_length, app.hasher->policy().max_length};
}

}  // namespace

// Shared by registration and admin creation: validate, hash, insert.
void create_user(App& app, const RequestContext& ctx, httplib::Response& res, UserOperation op) {
  auto body = parse_json_body(ctx.body, res);
  if (!body) return;
  UserInput input;
  if (auto errors = parse_user_input(*body, op, op == UserOperation::create, password_lengths(app), input);
      !errors.empty()) {
    return send_validation_problem(res, errors);
  }
  User user;
  user.id = new_object_id();
  apply_user_input(input, op, user);
  user.role = input.role.value_or(Role::user);
  user.created_at_ms = user.updated_at_ms = now_ms();
  user.version = 1;
  try {
    user.password_hash = app.hasher->hash(*input.password);
  } catch (const std::exception& e) {
    spdlog::error("password hashing failed: {}", e.what());
    return send_problem(res, 503, "the server is too busy to hash passwords; retry shortly");
  }
  auto created = app.store->create(user);
  if (!created) {
    if (created.error().code == Errc::conflict) return send_conflict(res, created.error());
    return send_store_error(res, created.error());
  }
  spdlog::info("user {} created ({})", created.value().id, op == UserOperation::create ? "by admin" : "registered");
  send_created(res, created.value());
}

namespace {

// Both unknown email and wrong password end here, with the same body.
void send_login_failed(httplib::Response& res) {
  send_unauthorized(res, "email or password is incorrect", false);
}

std::optional<std::string> string_field(const nlohmann::json& body, const char* name, size_t max, FieldErrors& errors) {
  auto it = body.find(name);
  if (it == body.end()) {
    errors.push_back({name, "is required"});
  } else if (!it->is_string()) {
    errors.push_back({name, "must be a string"});
  } else if (it->get_ref<const std::string&>().size() > max) {
    errors.push_back({name, "is too long"});
  } else {
    return it->get<std::string>();
  }
  return std::nullopt;
}

void login(App& app, const RequestContext& ctx, httplib::Response& res) {
  auto body = parse_json_body(ctx.body, res);
  if (!body) return;
  if (!body->is_object()) return send_validation_problem(res, {{"", "the request body must be a JSON object"}});
  FieldErrors errors;
  for (const auto& [key, value] : body->items()) {
    if (key != "email" && key != "password") errors.push_back({key, "is not a known field"});
  }
  auto email = string_field(*body, "email", 254, errors);
  auto password = string_field(*body, "password", 1024, errors);
  if (!errors.empty()) return send_validation_problem(res, errors);

  auto found = app.store->find_by_email(normalize_email(*email));
  if (!found) {
    if (found.error().code != Errc::not_found) return send_store_error(res, found.error());
    app.hasher->verify_dummy(*password);  // same cost as a real check: no timing oracle for registered emails
    return send_login_failed(res);
  }
  User& user = found.value();
  if (!app.hasher->verify(user.password_hash, *password)) return send_login_failed(res);

  if (app.hasher->needs_rehash(user.password_hash)) {
    // Parameters were raised since this hash was made: upgrade it now that we know the password.
    try {
      user.password_hash = app.hasher->hash(*password);
      if (auto updated = app.store->update(user); !updated) {
        spdlog::warn("rehash of user {} not saved: {}", user.id, updated.error().message);
      }
    } catch (const std::exception& e) {
      spdlog::warn("rehash of user {} failed: {}", user.id, e.what());
    }
  }
  send_json(res, 200,
            {{"token", jwt_issue(app.jwt, user.id, now_seconds())},
             {"tokenType", "Bearer"},
             {"expiresIn", app.jwt.ttl_seconds}});
}

}  // namespace

void add_auth_routes(Router& router, App& app) {
  router.add({"POST", "/v1/auth/register", false, kJsonOnly, [&app](const auto&, auto& res, auto& ctx) {
                if (!app.config.registration_enabled) {
                  return send_problem(res, 403, "registration is closed; ask an administrator for an account");
                }
                create_user(app, ctx, res, UserOperation::register_self);
              }});
  router.add({"POST", "/v1/auth/login", false, kJsonOnly,
              [&app](const auto&, auto& res, auto& ctx) { login(app, ctx, res); }});
}

}  // namespace usersd
