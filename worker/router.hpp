// Method + path template routing ("/v1/users/{id}"), with the 404/405 distinction httplib does not make.
#pragma once

#include <httplib.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/user.hpp"
#include "worker/request_body.hpp"

namespace usersd {

struct RequestContext {
  std::map<std::string, std::string> params;  // path parameters by name
  std::string body;                           // the request body, read within http.max_body_bytes
  std::optional<User> caller;                 // the authenticated user, on routes that need one
};

using RouteHandler = std::function<void(const httplib::Request&, httplib::Response&, RequestContext&)>;

struct Route {
  std::string method;        // GET, POST, PUT, PATCH, DELETE
  std::string path;          // template; segments in braces are parameters
  bool needs_auth = false;
  MediaTypes body_types;     // empty: the route takes no body
  RouteHandler handler;
};

struct RouteMatch {
  const Route* route = nullptr;               // set when path and method match
  std::vector<std::string> allowed_methods;   // set when only the path matches (405)
  std::map<std::string, std::string> params;
};

class Router {
 public:
  void add(Route route);
  // HEAD is matched as GET. Literal segments win over parameters (/v1/users/me over /v1/users/{id}).
  RouteMatch match(std::string_view method, std::string_view path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace usersd
