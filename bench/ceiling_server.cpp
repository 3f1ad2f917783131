// The library ceiling for `make bench`: the same cpp-httplib build, thread pool, timeouts and socket options
// as a usersd worker (SO_REUSEPORT, TCP_NODELAY, backlog 1024), answering fixed bodies with no routing,
// middleware, auth or store. The bench starts one per usersd worker on one port, as the supervisor does,
// so usersd's figures can be read as a fraction of what cpp-httplib itself can do on this machine.
#include <httplib.h>
#include <sys/socket.h>

#include <cstdlib>
#include <iostream>
#include <string>

namespace {

// listen() again on the bound socket only resizes its queue (Debian's build compiles in a backlog of 5).
class Server final : public httplib::Server {
 public:
  bool widen_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }
};

// Bodies of the same size and shape as usersd's answers, so bytes on the wire match.
const std::string kHealthBody =
    R"({"pid":12345,"status":"ok","store":"ok","uptimeSeconds":12,"version":"0.1.0"})";
const std::string kUserBody =
    R"({"id":"6b131aa1eecbcfc3ade0eee7","email":"bench@example.com","firstName":"Bench","lastName":"User",)"
    R"("role":"user","createdAt":"2026-12-04T19:55:13.687Z","updatedAt":"2026-12-04T19:55:13.687Z",)"
    R"("_links":{"self":{"href":"/v1/users/6b131aa1eecbcfc3ade0eee7"}}})";

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: ceiling_server PORT THREADS\n";
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const size_t threads = static_cast<size_t>(std::atoi(argv[2]));
  Server server;
  // The values of usersd's defaults (common/config.hpp, worker/http_server.cpp).
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(10000);
  server.set_keep_alive_timeout(75);
  server.set_read_timeout(10, 0);
  server.set_write_timeout(10, 0);
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
  });
  server.Get("/healthcheck", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kHealthBody, "application/json");
  });
  server.Get("/.*", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kUserBody, "application/json");
  });
  if (!server.bind_to_port("127.0.0.1", port) || !server.widen_backlog(1024)) {
    std::cerr << "ceiling_server: cannot listen on 127.0.0.1:" << port << "\n";
    return 1;
  }
  return server.listen_after_bind() ? 0 : 1;
}
