#include "worker/client_address.hpp"

namespace usersd {

std::string client_address(const App& app, const httplib::Request& req) {
  if (app.trusted_proxies.empty()) return req.remote_addr;
  // Several X-Forwarded-For headers are one list in order (RFC 9110 field combination).
  std::string forwarded;
  const auto [first, last] = req.headers.equal_range("X-Forwarded-For");
  for (auto it = first; it != last; ++it) {
    if (!forwarded.empty()) forwarded += ',';
    forwarded += it->second;
  }
  return resolve_client_address(req.remote_addr, forwarded, app.trusted_proxies);
}

}  // namespace usersd
