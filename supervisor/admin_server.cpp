#include "supervisor/admin_server.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace usersd {
namespace {

constexpr size_t kAdminThreads = 2;  // scrapes are rare; one slow client must not block the next scrape
constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

AdminServer::AdminServer(Render render) : render_(std::move(render)), server_(std::make_unique<httplib::Server>()) {}

AdminServer::~AdminServer() { stop(); }

bool AdminServer::start(const std::string& bind, int port, std::string& error) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(kAdminThreads); };
  server_->set_read_timeout(5, 0);
  server_->set_write_timeout(5, 0);
  server_->set_keep_alive_timeout(5);
  server_->set_payload_max_length(4096);
  // Workers are forked from this process: the listener must not leak into them.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    fcntl(sock, F_SETFD, FD_CLOEXEC);
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_(), kPrometheusContentType);
  });
  if (!server_->bind_to_port(bind, port)) {
    error = "admin.port: cannot listen on " + bind + ":" + std::to_string(port) + ": " + std::strerror(errno);
    return false;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void AdminServer::stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace usersd
