// One worker's HTTP server: cpp-httplib configured for production, wired to the Router, with our own
// per-connection loop so a draining worker ends keep-alive connections without resetting any request.
#pragma once

#include <httplib.h>

#include <atomic>
#include <memory>
#include <string>

#include "worker/app.hpp"
#include "worker/router.hpp"

namespace usersd {

class AccessLog;

class HttpServer {
 public:
  explicit HttpServer(App& app);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on config.http.bind:port. With reuse_port, sibling workers share the port (SO_REUSEPORT).
  bool bind(bool reuse_port, std::string& error);
  // Serves until begin_drain(); returns once every connection has ended.
  bool serve();
  // Closes the listener, answers what is in flight with Connection: close, and ends idle keep-alive
  // connections after a short grace. Safe from any thread, idempotent.
  void begin_drain();
  const Router& router() const { return router_; }

 private:
  class Engine;
  void configure();
  httplib::Server::HandlerResponse before_routing(const httplib::Request& req, httplib::Response& res);
  void dispatch(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader* body);
  void answer_options(const httplib::Request& req, httplib::Response& res, const RouteMatch& match);

  App& app_;
  Router router_;
  std::unique_ptr<AccessLog> access_log_;
  int drain_event_fd_ = -1;  // becomes readable when draining starts; wakes idle connections
  std::atomic<bool> draining_started_{false};
  std::unique_ptr<Engine> server_;
};

// For handlers: send `Connection: close` and close this connection after the response.
void close_connection_after_response(httplib::Response& res);

}  // namespace usersd
