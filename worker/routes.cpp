#include "worker/routes.hpp"

namespace usersd {

Router build_router(App& app) {
  Router router;
  add_meta_routes(router, app);
  add_auth_routes(router, app);
  add_user_routes(router, app);
  return router;
}

void replace_header(httplib::Response& res, const std::string& name, const std::string& value) {
  res.headers.erase(name);
  res.set_header(name, value);
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

}  // namespace usersd
