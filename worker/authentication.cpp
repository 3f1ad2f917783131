#include <algorithm>
#include <cctype>

#include "common/time_format.hpp"
#include "worker/problem.hpp"
#include "worker/routes.hpp"

namespace usersd {
namespace {

// "Bearer <token>" (RFC 6750) or "JWT <token>" (what the Node.js service's clients send); scheme case-insensitive.
std::optional<std::string_view> token_from(std::string_view header) {
  const auto space = header.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  std::string scheme(header.substr(0, space));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  if (scheme != "bearer" && scheme != "jwt") return std::nullopt;
  std::string_view token = header.substr(space + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace

bool authenticate(App& app, const httplib::Request& req, httplib::Response& res, RequestContext& ctx) {
  if (!req.has_header("Authorization")) {
    send_unauthorized(res, "this resource needs a bearer token", false);
    return false;
  }
  const std::string header = req.get_header_value("Authorization");
  const auto token = token_from(header);
  if (!token) {
    send_unauthorized(res, "the Authorization header must be 'Bearer <token>'", true);
    return false;
  }
  auto claims = jwt_verify(app.jwt, *token, now_seconds());
  if (!claims) {
    send_unauthorized(res, claims.error().message, true);
    return false;
  }
  // The user is loaded on every request so deleted users and changed roles take effect at once.
  auto user = app.store->find_by_id(claims.value().sub);
  if (!user) {
    if (user.error().code == Errc::not_found) {
      send_unauthorized(res, "the token's user no longer exists", true);
    } else {
      send_store_error(res, user.error());
    }
    return false;
  }
  ctx.caller = std::move(user).value();
  return true;
}

}  // namespace usersd
