#include "worker/access_log.hpp"

#include <chrono>

#include "common/json_text.hpp"
#include "common/logging.hpp"
#include "worker/client_address.hpp"
#include "worker/request_scope.hpp"

namespace usersd {
namespace {

constexpr const char* kLoginRoute = "/v1/auth/login";
constexpr size_t kMaxTraceIdLength = 256;  // X-Amzn-Trace-Id is ~80 characters; anything longer is not the ALB's

uint64_t body_bytes(const httplib::Response& res) { return res.body.size(); }

}  // namespace

AccessLog::AccessLog(App& app, const Router& router) : app_(app) {
  if (!app_.metrics) return;
  for (const auto& route : router.routes()) route_index_[&route] = app_.metrics->intern_route(route.path);
}

void AccessLog::finish(const httplib::Request& req, const httplib::Response& res) {
  const RequestScope& scope = current_request();
  const auto duration = std::chrono::steady_clock::now() - scope.started;
  app_.serving.requests.fetch_add(1, std::memory_order_relaxed);
  const bool is_login = scope.route != nullptr && scope.route->path == kLoginRoute && req.method == "POST";
  if (app_.metrics) {
    const auto it = scope.route ? route_index_.find(scope.route) : route_index_.end();
    app_.metrics->record_request(it == route_index_.end() ? 0 : it->second, req.method, res.status,
                                 std::chrono::duration_cast<std::chrono::nanoseconds>(duration), body_bytes(res));
    // 401 is the one answer to a wrong email or password; other statuses (400, 429, 503) are not attempts.
    if (is_login && (res.status == 200 || res.status == 401)) app_.metrics->record_login(res.status == 200);
  }
  if (!app_.config.log.access) return;
  JsonFields fields;
  fields.add("method", req.method)
      .add("route", scope.route ? std::string_view(scope.route->path) : std::string_view("unmatched"))
      .add("path", req.path)
      .add("status", res.status)
      .add("bytes", body_bytes(res))
      .add("duration_ms", std::chrono::duration<double, std::milli>(duration).count())
      .add("client", req.remote_addr.empty() ? scope.peer : client_address(app_, req));
  if (!scope.user_id.empty()) fields.add("user_id", scope.user_id);
  if (req.has_header("X-Amzn-Trace-Id")) {
    const std::string trace = req.get_header_value("X-Amzn-Trace-Id");
    fields.add("trace_id", std::string_view(trace).substr(0, kMaxTraceIdLength));
  }
  log_event(spdlog::level::info, "access", fields);
}

}  // namespace usersd
