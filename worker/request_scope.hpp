// What is known about the request a connection thread is serving, for its log lines and metrics.
// httplib runs a request start to finish (parse, handlers, response, logger) on one thread.
#pragma once

#include <httplib.h>

#include <chrono>
#include <string>
#include <string_view>

#include "worker/router.hpp"

namespace usersd {

struct RequestScope {
  std::chrono::steady_clock::time_point started;
  std::string request_id;
  const Route* route = nullptr;  // the matched route template, when there is one
  std::string user_id;           // the authenticated caller, when there is one
  std::string peer;              // the connection's peer address (known even when the request is unparsable)
};

RequestScope& current_request();

// Starts a new request on this thread: the clock runs from here; id, route and user are cleared.
void begin_request(std::string_view peer);

// Gives the response its X-Request-Id (the client's when sane, a new one otherwise) and makes it the id of
// this thread's log lines. Idempotent: later calls for the same request keep the first id.
void assign_request_id(const httplib::Request& req, httplib::Response& res);

// At most 128 characters of [A-Za-z0-9._-]: safe in logs, headers and JSON.
bool valid_request_id(std::string_view id);

}  // namespace usersd
