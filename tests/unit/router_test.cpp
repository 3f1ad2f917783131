#include <doctest/doctest.h>

#include <set>

#include "worker/openapi_document.hpp"
#include "worker/router.hpp"
#include "worker/routes.hpp"

using namespace usersd;

namespace {

Router sample_router() {
  Router r;
  const RouteHandler noop = [](const auto&, auto&, auto&) {};
  r.add({"GET", "/v1/users/{id}", true, {}, noop});
  r.add({"PUT", "/v1/users/{id}", true, {}, noop});
  r.add({"GET", "/v1/users/me", true, {}, noop});
  r.add({"GET", "/v1/users", true, {}, noop});
  r.add({"POST", "/v1/users", true, {}, noop});
  return r;
}

}  // namespace

TEST_CASE("router matches templates and captures parameters") {
  const Router r = sample_router();
  auto m = r.match("GET", "/v1/users/abc");
  REQUIRE(m.route != nullptr);
  CHECK(m.route->path == "/v1/users/{id}");
  CHECK(m.params.at("id") == "abc");
  CHECK(r.match("HEAD", "/v1/users").route != nullptr);
}

TEST_CASE("literal segments beat parameters") {
  const Router r = sample_router();
  auto me = r.match("GET", "/v1/users/me");
  REQUIRE(me.route != nullptr);
  CHECK(me.route->path == "/v1/users/me");
  // PUT /v1/users/me is not a route: /v1/users/me answers 405 with its own methods only.
  auto put_me = r.match("PUT", "/v1/users/me");
  CHECK(put_me.route == nullptr);
  CHECK(put_me.allowed_methods == std::vector<std::string>{"GET"});
}

TEST_CASE("404 versus 405") {
  const Router r = sample_router();
  auto wrong_method = r.match("DELETE", "/v1/users");
  CHECK(wrong_method.route == nullptr);
  CHECK(std::set<std::string>(wrong_method.allowed_methods.begin(), wrong_method.allowed_methods.end()) ==
        std::set<std::string>{"GET", "POST"});
  for (const char* path : {"/v1/user", "/v1/users/a/b", "/", "", "v1/users", "/v1/users/"}) {
    auto none = r.match("GET", path);
    CHECK_MESSAGE(none.route == nullptr, path);
    CHECK_MESSAGE(none.allowed_methods.empty(), path);
  }
}

TEST_CASE("every route served is in the OpenAPI document, and every documented operation is served") {
  auto spec = nlohmann::json::parse(embedded::openapi_json());
  std::set<std::string> documented;
  for (const auto& [path, ops] : spec["paths"].items()) {
    for (const auto& [method, op] : ops.items()) {
      if (!op.is_object() || !op.contains("responses")) continue;
      std::string upper = method;
      for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(upper + " " + path);
    }
  }
  // Routes are registered without touching the store, so an empty App is enough here.
  App app;
  const Router router = build_router(app);
  std::set<std::string> served;
  for (const auto& route : router.routes()) served.insert(route.method + " " + route.path);
  CHECK(served == documented);
  CHECK(served.size() >= 12);
}
