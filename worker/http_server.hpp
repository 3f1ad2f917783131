// One worker's HTTP server: cpp-httplib configured for production, wired to the Router.
#pragma once

#include <httplib.h>

#include <string>

#include "worker/app.hpp"
#include "worker/router.hpp"

namespace usersd {

class HttpServer {
 public:
  explicit HttpServer(App& app);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds config.http.bind:port. With reuse_port, sibling workers can bind the same port (SO_REUSEPORT).
  bool bind(bool reuse_port, std::string& error);
  // Serves until stop(); returns after in-flight requests finish.
  bool serve();
  // Closes the listener; safe from any thread.
  void stop();
  const Router& router() const { return router_; }

 private:
  void configure();
  httplib::Server::HandlerResponse before_routing(const httplib::Request& req, httplib::Response& res);
  void dispatch(const httplib::Request& req, httplib::Response& res);
  void answer_options(const httplib::Request& req, httplib::Response& res, const RouteMatch& match);

  App& app_;
  Router router_;
  httplib::Server server_;
};

}  // namespace usersd
