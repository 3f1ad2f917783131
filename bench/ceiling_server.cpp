// The ceiling for bench/bench_api.sh: the same cpp-httplib build, thread pool and socket options as a
// usersd worker, answering a fixed small JSON body with no routing, auth or store. usersd's throughput is
// reported as a ratio against this, measured in the same run on the same machine.
#include <httplib.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: ceiling_server PORT\n";
    return 2;
  }
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(32); };
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(10000);
  server.set_keep_alive_timeout(75);
  const std::string body =
      R"({"id":"6b131aa1eecbcfc3ade0eee7","email":"bench@example.com","firstName":"Bench","lastName":"User",)"
      R"("role":"user","createdAt":"2026-12-04T19:55:13.687Z","updatedAt":"2026-12-04T19:55:13.687Z",)"
      R"("_links":{"self":{"href":"/v1/users/6b131aa1eecbcfc3ade0eee7"}}})";
  server.Get("/.*", [&body](const httplib::Request&, httplib::Response& res) {
    res.set_content(body, "application/json");
  });
  return server.listen("127.0.0.1", std::atoi(argv[1])) ? 0 : 1;
}
