#include "worker/http_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "worker/access_log.hpp"
#include "worker/connection_stream.hpp"
#include "worker/content_negotiation.hpp"
#include "worker/problem.hpp"
#include "worker/request_body.hpp"
#include "worker/request_scope.hpp"
#include "worker/routes.hpp"
#include "worker/task_pool.hpp"

namespace usersd {
namespace {

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

// Methods a client may use on a path, as the Allow header lists them.
std::vector<std::string> allow_list(std::vector<std::string> methods) {
  if (std::find(methods.begin(), methods.end(), "GET") != methods.end()) methods.push_back("HEAD");
  methods.push_back("OPTIONS");
  return methods;
}

std::vector<std::string> methods_for_path(const Router& router, const std::string& path) {
  std::vector<std::string> methods;
  for (const char* m : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
    if (router.match(m, path).route != nullptr) methods.emplace_back(m);
  }
  return methods;
}

bool origin_allowed(const HttpConfig& http, const std::string& origin) {
  const auto& allowed = http.cors_allowed_origins;
  return std::find(allowed.begin(), allowed.end(), "*") != allowed.end() ||
         std::find(allowed.begin(), allowed.end(), origin) != allowed.end();
}

// Adds CORS headers for configured origins; other origins get none, so browsers block them.
bool apply_cors(const HttpConfig& http, const httplib::Request& req, httplib::Response& res) {
  if (!req.has_header("Origin")) return false;
  const std::string origin = req.get_header_value("Origin");
  res.set_header("Vary", "Origin");
  if (!origin_allowed(http, origin)) return false;
  res.set_header("Access-Control-Allow-Origin", origin);
  res.set_header("Access-Control-Expose-Headers", "Location, ETag, X-Request-Id");
  return true;
}

// Set by a handler that wants its connection closed after the response; read by the connection loop
// on the same thread (httplib runs a request's handler on the thread that owns the connection).
thread_local bool close_requested = false;
// Set when the current request's body was read. A body left unread (a request refused before its body
// was needed: 404, 405, 415, or a GET with a body) would be parsed as the next request on the connection.
thread_local bool body_consumed = false;

bool declares_body(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding") ||
         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
}

constexpr int kDrainIdleGraceMs = 200;
constexpr int kPressureIdleGraceMs = 50;
// While connections wait for a thread, a request head taking longer than this is cut off (408): a
// real client's head arrives in one or two packets; a slowloris one never does.
constexpr int64_t kSlowHeadUnderPressureMs = 1000;
constexpr int kListenBacklog = 1024;  // capped by net.core.somaxconn
// Debian's libcpp-httplib answers 414 above 8192 bytes (CPPHTTPLIB_REQUEST_URI_MAX_LENGTH, compiled in).
constexpr size_t kMaxRequestLine = 8192;

// Answers a request we refuse before httplib has parsed it (slow or oversized head, too many connections),
// then the connection closes. The problem body is as every other error's.
void send_early_problem(ConnectionStream& stream, int status, const std::string& detail, int retry_after = 0) {
  httplib::Response res;
  send_problem(res, status, detail);
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  out += "Content-Type: " + std::string(kProblemContentType) + "\r\n";
  out += "Content-Length: " + std::to_string(res.body.size()) + "\r\n";
  if (retry_after > 0) out += "Retry-After: " + std::to_string(retry_after) + "\r\n";
  out += "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + res.body;
  stream.write(out.data(), out.size());
}

// Open connections per client address in this worker, for http.max_connections_per_client.
class ConnectionCounts {
 public:
  bool admit(const std::string& address, int limit) {
    std::lock_guard lock(mutex_);
    int& open = counts_[address];
    if (open >= limit) {
      if (open == 0) counts_.erase(address);
      return false;
    }
    ++open;
    return true;
  }
  void release(const std::string& address) {
    std::lock_guard lock(mutex_);
    auto it = counts_.find(address);
    if (it != counts_.end() && --it->second <= 0) counts_.erase(it);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, int> counts_;
};

}  // namespace

void close_connection_after_response(httplib::Response& res) {
  res.set_header("Connection", "close");
  close_requested = true;
}

// httplib::Server with our connection loop. Its own loop checks for shutdown only before waiting for the
// next request, then closes without telling the client, so a client's next request on that keep-alive
// connection would be reset. Ours says `Connection: close` on the last response instead. It also reads
// each request head whole, within http.header_timeout and the size limits, before httplib parses it, and
// gives up idle connections' threads when new connections are waiting for one.
class HttpServer::Engine final : public httplib::Server {
 public:
  Engine(App& app, int drain_event_fd) : app_(app), state_(app.serving), drain_event_fd_(drain_event_fd) {
    const int threads = app.config.http.threads;
    new_task_queue = [this, threads] {
      auto* pool = new TaskPool(static_cast<size_t>(threads));
      pool_.store(pool);
      return pool;
    };
  }

  // Debian's libcpp-httplib listens with a backlog of 5 (compiled in); connection bursts (an ALB opening
  // connections, a sibling worker being replaced) need more. listen() again just resizes the queue.
  bool widen_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }

 private:
  bool process_and_close_socket(socket_t sock) override {
    state_.connections.fetch_add(1);
    const HttpConfig& http = app_.config.http;
    ConnectionStream stream(sock, static_cast<int>(read_timeout_sec_ * 1000 + read_timeout_usec_ / 1000),
                            static_cast<int>(write_timeout_sec_ * 1000 + write_timeout_usec_ / 1000));
    std::string peer;
    int peer_port = 0;
    stream.get_remote_ip_and_port(peer, peer_port);
    // Proxies (the ALB) carry many clients' connections: only direct clients are capped.
    const bool capped = !app_.trusted_proxies.contains(peer);
    const bool admitted = !capped || connection_counts_.admit(peer, http.max_connections_per_client);
    bool ok = admitted;
    if (!admitted) send_early_problem(stream, 429, "too many open connections from your address", 1);
    const ConnectionStream::HeadLimits limits{kMaxRequestLine, static_cast<size_t>(http.max_header_bytes),
                                              static_cast<size_t>(http.max_header_count), kSlowHeadUnderPressureMs};
    TaskPool* pool = pool_.load();
    for (size_t remaining = keep_alive_max_count_; ok && remaining > 0; --remaining) {
      const bool first = remaining == keep_alive_max_count_;
      if (!stream.has_buffered_bytes() && !wait_for_request(sock, first ? http.header_timeout * 1000 : -1)) break;
      const auto head = stream.read_head(limits, ConnectionStream::Clock::now() + std::chrono::seconds(http.header_timeout),
                                         pool ? pool->pressure_fd() : -1);
      if (head != ConnectionStream::Head::complete) {
        refuse_head(stream, head);
        break;
      }
      stream.set_read_deadline(ConnectionStream::Clock::now() + std::chrono::seconds(http.body_timeout));
      const bool last = remaining == 1 || state_.draining.load();
      bool client_closes = false;
      close_requested = false;
      body_consumed = false;
      state_.in_flight.fetch_add(1);
      begin_request(peer);
      ok = process_request(stream, last, client_closes, nullptr);
      state_.in_flight.fetch_sub(1);
      stream.set_read_deadline(std::nullopt);
      if (!ok || client_closes || last || close_requested) break;
    }
    if (capped && admitted) connection_counts_.release(peer);
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    state_.connections.fetch_sub(1);
    return ok;
  }

  static void refuse_head(ConnectionStream& stream, ConnectionStream::Head head) {
    using Head = ConnectionStream::Head;
    switch (head) {
      case Head::timed_out: return send_early_problem(stream, 408, "the request headers did not arrive in time");
      case Head::uri_too_long: return send_early_problem(stream, 414, "the request line is too long");
      case Head::too_large: return send_early_problem(stream, 431, "the request headers are too large or too many");
      case Head::closed:
      case Head::complete: return;
    }
  }

  // Waits for the next request on a new or idle keep-alive connection; false means close it.
  // timeout_ms < 0: the keep-alive timeout.
  bool wait_for_request(int sock, int timeout_ms) const {
    TaskPool* pool = pool_.load();
    pollfd fds[3] = {{sock, POLLIN, 0}, {drain_event_fd_, POLLIN, 0}, {pool ? pool->pressure_fd() : -1, POLLIN, 0}};
    const int wait_ms = timeout_ms >= 0 ? timeout_ms : static_cast<int>(keep_alive_timeout_sec_ * 1000);
    int n;
    do {
      n = ::poll(fds, 3, wait_ms);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;  // keep-alive timeout
    if (fds[0].revents != 0) return true;
    // Draining, or a new connection waits for a thread that this idle one holds: close it, unless its
    // next request is on its way (a client that just got a response may be sending already).
    pollfd last_chance{sock, POLLIN, 0};
    return ::poll(&last_chance, 1, fds[1].revents != 0 ? kDrainIdleGraceMs : kPressureIdleGraceMs) > 0;
  }

  App& app_;
  ServingState& state_;
  int drain_event_fd_;
  std::atomic<TaskPool*> pool_{nullptr};
  ConnectionCounts connection_counts_;
};

HttpServer::HttpServer(App& app)
    : app_(app),
      router_(build_router(app)),
      access_log_(std::make_unique<AccessLog>(app, router_)),
      drain_event_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      server_(std::make_unique<Engine>(app, drain_event_fd_)) {
  configure();
}

HttpServer::~HttpServer() {
  server_.reset();
  if (drain_event_fd_ >= 0) ::close(drain_event_fd_);
}

void HttpServer::begin_drain() {
  if (draining_started_.exchange(true)) return;
  // Listener first: a client told to reconnect must not land on this worker's closing listener again.
  server_->stop();
  app_.serving.draining = true;
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(drain_event_fd_, &one, sizeof one);
}

void HttpServer::configure() {
  const HttpConfig& http = app_.config.http;
  server_->set_tcp_nodelay(true);  // without it keep-alive responses wait ~40 ms for delayed ACKs
  server_->set_keep_alive_timeout(http.keep_alive_timeout);
  server_->set_keep_alive_max_count(static_cast<size_t>(http.keep_alive_max_requests));
  server_->set_read_timeout(http.read_timeout, 0);
  server_->set_write_timeout(http.write_timeout, 0);
  server_->set_payload_max_length(static_cast<size_t>(http.max_body_bytes));
  server_->set_default_headers({
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
      {"Referrer-Policy", "no-referrer"},
      {"Cache-Control", "no-store"},
  });
  // Runs just before each response's headers go out. Connection: close when draining (even for a request
  // that arrived earlier) and when the request's body was never read.
  server_->set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    assign_request_id(req, res);  // also on responses httplib made without routing (400, 414...)
    if (!app_.serving.draining && (body_consumed || !declares_body(req))) return;
    res.headers.erase("Keep-Alive");
    res.headers.erase("Connection");
    close_connection_after_response(res);
  });
  server_->set_pre_routing_handler([this](const auto& req, auto& res) { return before_routing(req, res); });
  // Every method goes to one dispatcher; the Router, not httplib's regexes, decides 404 versus 405.
  // Bodies are pulled through a ContentReader so their size is bounded for chunked and unsized bodies
  // too (httplib's own limit only covers Content-Length).
  server_->Get(".*", [this](const auto& req, auto& res) { dispatch(req, res, nullptr); });
  const httplib::Server::HandlerWithContentReader with_body = [this](const auto& req, auto& res, const auto& body) {
    dispatch(req, res, &body);
  };
  server_->Post(".*", with_body);
  server_->Put(".*", with_body);
  server_->Patch(".*", with_body);
  server_->Delete(".*", with_body);
  // Errors httplib produces itself (413, 400 on a bad request line...) get problem bodies too.
  server_->set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    assign_request_id(req, res);  // before the body: the problem names the request id
    // httplib answered without routing (an unparsable request line or headers, a URI too long...): what
    // follows on this connection cannot be trusted to start a new request.
    close_connection_after_response(res);
    send_problem(res, res.status);
    return httplib::Server::HandlerResponse::Handled;
  }));
  server_->set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const PasswordHasherBusy&) {
      // Every Argon2 slot busy and the queue full: shed this request rather than queue it without bound.
      res.set_header("Retry-After", "1");
      return send_problem(res, 503, "the server is too busy to check passwords; retry shortly");
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("unhandled exception on {} {}: {}", req.method, req.path, what);
    send_problem(res, 500, "internal error");
  });
  server_->set_logger([this](const httplib::Request& req, const httplib::Response& res) { access_log_->finish(req, res); });
}

httplib::Server::HandlerResponse HttpServer::before_routing(const httplib::Request& req, httplib::Response& res) {
  using HR = httplib::Server::HandlerResponse;
  assign_request_id(req, res);
  apply_cors(app_.config.http, req, res);
  if (req.has_header("Accept-Encoding")) {
    // httplib picks a response coding by substring and ignores q-values; hand it only what the client accepts.
    // The Request is httplib's own mutable object, passed to us as const.
    auto& headers = const_cast<httplib::Request&>(req).headers;
    const std::string accepted = accepted_encodings(req.get_header_value("Accept-Encoding"));
    headers.erase("Accept-Encoding");
    if (!accepted.empty()) headers.emplace("Accept-Encoding", accepted);
  }

  if (!check_framing(req, res)) return HR::Handled;  // the connection closes: its framing cannot be trusted

  if (req.method == "OPTIONS") {
    const auto methods = methods_for_path(router_, req.path);
    if (!methods.empty()) current_request().route = router_.match(methods.front(), req.path).route;
    if (methods.empty()) {
      send_problem(res, 404, "no such resource");
    } else {
      answer_options(req, res, RouteMatch{nullptr, methods, {}});
    }
    return HR::Handled;
  }
  const RouteMatch match = router_.match(req.method, req.path);
  current_request().route =
      match.route ? match.route
                  : match.allowed_methods.empty() ? nullptr : router_.match(match.allowed_methods.front(), req.path).route;
  if (match.route == nullptr) {
    if (match.allowed_methods.empty()) {
      send_problem(res, 404, "no such resource");
    } else {
      res.set_header("Allow", join(allow_list(match.allowed_methods), ", "));
      send_problem(res, 405, req.method + " is not supported here");
    }
    return HR::Handled;
  }
  // Checked before httplib reads (and would decompress) the body.
  if (!match.route->body_types.empty() && !check_body_headers(req, res, match.route->body_types)) return HR::Handled;
  return HR::Unhandled;
}

void HttpServer::answer_options(const httplib::Request& req, httplib::Response& res, const RouteMatch& match) {
  const std::string allow = join(allow_list(match.allowed_methods), ", ");
  res.set_header("Allow", allow);
  const bool preflight = req.has_header("Access-Control-Request-Method");
  if (preflight && res.has_header("Access-Control-Allow-Origin")) {
    res.set_header("Access-Control-Allow-Methods", allow);
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id");
    res.set_header("Access-Control-Max-Age", "600");
  }
  res.status = 204;
}

void HttpServer::dispatch(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader* body) {
  const RouteMatch match = router_.match(req.method, req.path);
  if (match.route == nullptr) return send_problem(res, 404, "no such resource");  // before_routing answered already
  RequestContext ctx;
  ctx.params = match.params;
  if (body != nullptr) {
    const size_t limit = static_cast<size_t>(app_.config.http.max_body_bytes);
    bool too_large = false;
    const bool complete = (*body)([&](const char* data, size_t length) {
      if (ctx.body.size() + length > limit) {
        too_large = true;
        return false;
      }
      ctx.body.append(data, length);
      return true;
    });
    body_consumed = complete;
    if (!complete) {
      // The rest of the body is still unread on the socket: this connection cannot carry another request.
      close_connection_after_response(res);
      if (too_large || res.status == 413) {
        return send_problem(res, 413, "the request body is larger than " + std::to_string(limit) + " bytes");
      }
      return send_problem(res, 400, "the request body could not be read");
    }
  }
  if (match.route->needs_auth) {
    if (!authenticate(app_, req, res, ctx)) return;
    current_request().user_id = ctx.caller->id;
  }
  match.route->handler(req, res, ctx);
}

bool HttpServer::bind(bool reuse_port, std::string& error) {
  server_->set_socket_options([reuse_port](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (reuse_port) setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
  });
  const auto& http = app_.config.http;
  if (!server_->bind_to_port(http.bind, http.port)) {
    error = "cannot listen on " + http.bind + ":" + std::to_string(http.port) + ": " + std::strerror(errno);
    return false;
  }
  if (!server_->widen_backlog(kListenBacklog)) {
    error = std::string("cannot set the listen backlog: ") + std::strerror(errno);
    return false;
  }
  return true;
}

bool HttpServer::serve() {
  if (app_.serving.draining) return true;  // told to stop before we started
  return server_->listen_after_bind();
}


}  // namespace usersd
