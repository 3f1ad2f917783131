// The API's route table, grouped by area. Each add_* function registers one area's routes.
#pragma once

#include "common/user_input.hpp"
#include "worker/app.hpp"
#include "worker/router.hpp"

namespace usersd {

void add_meta_routes(Router& router, App& app);   // /healthcheck, /v1/api-docs
void add_auth_routes(Router& router, App& app);   // /v1/auth/register, /v1/auth/login
void add_user_routes(Router& router, App& app);   // /v1/users...

Router build_router(App& app);

// Resolves the Authorization header to ctx.caller; on failure sends 401/503 and returns false.
bool authenticate(App& app, const httplib::Request& req, httplib::Response& res, RequestContext& ctx);

// Validates the body, hashes the password and inserts the user; answers 201 or the error.
// Used by registration and by admins creating users.
void create_user(App& app, const RequestContext& ctx, httplib::Response& res, UserOperation operation);

// Sets a header replacing any value set before (httplib's set_header appends, and default headers are preset).
void replace_header(httplib::Response& res, const std::string& name, const std::string& value);

// Sends `body` as application/json with the given status.
void send_json(httplib::Response& res, int status, const nlohmann::json& body);

}  // namespace usersd
