// The admin listener (admin.bind:admin.port, default 127.0.0.1 only): GET /metrics for Prometheus.
// Served by the supervisor on its own small thread, apart from the public port the workers share, so
// the load balancer never exposes it and it answers even while every worker is busy or restarting.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace usersd {

class AdminServer {
 public:
  using Render = std::function<std::string()>;
  explicit AdminServer(Render render);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds now (so a taken port is a start-up error), then serves on a thread until stop().
  bool start(const std::string& bind, int port, std::string& error);
  void stop();

 private:
  Render render_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace usersd
