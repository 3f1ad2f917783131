#include "worker/request_scope.hpp"

#include <sodium.h>

#include <algorithm>
#include <cctype>

#include "common/logging.hpp"

namespace usersd {
namespace {

thread_local RequestScope scope;

std::string new_request_id() {
  unsigned char bytes[12];
  randombytes_buf(bytes, sizeof bytes);
  char hex[sizeof bytes * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  return hex;
}

}  // namespace

RequestScope& current_request() { return scope; }

void begin_request(std::string_view peer) {
  scope.peer.assign(peer);
  scope.started = std::chrono::steady_clock::now();
  scope.request_id.clear();
  scope.route = nullptr;
  scope.user_id.clear();
  set_log_request_id({});
}

bool valid_request_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

void assign_request_id(const httplib::Request& req, httplib::Response& res) {
  if (scope.request_id.empty()) {
    // httplib's own error paths (a bad request line, say) may carry a half-parsed request: same rules.
    const std::string incoming = req.get_header_value("X-Request-Id");
    scope.request_id = valid_request_id(incoming) ? incoming : new_request_id();
    set_log_request_id(scope.request_id);
  }
  res.headers.erase("X-Request-Id");
  res.set_header("X-Request-Id", scope.request_id);
}

}  // namespace usersd
