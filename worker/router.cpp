#include "worker/router.hpp"

#include <algorithm>

namespace usersd {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  if (path.empty() || path.front() != '/') return parts;
  path.remove_prefix(1);
  while (true) {
    const auto slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool is_param(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

// Number of literal segments: more literal means more specific.
int specificity(const Route& route) {
  const auto parts = split_path(route.path);
  return static_cast<int>(std::count_if(parts.begin(), parts.end(), [](std::string_view s) { return !is_param(s); }));
}

bool path_matches(const Route& route, const std::vector<std::string_view>& request_parts,
                  std::map<std::string, std::string>& params) {
  const auto template_parts = split_path(route.path);
  if (template_parts.size() != request_parts.size()) return false;
  std::map<std::string, std::string> captured;
  for (size_t i = 0; i < template_parts.size(); ++i) {
    if (is_param(template_parts[i])) {
      if (request_parts[i].empty()) return false;
      captured[std::string(template_parts[i].substr(1, template_parts[i].size() - 2))] = std::string(request_parts[i]);
    } else if (template_parts[i] != request_parts[i]) {
      return false;
    }
  }
  params = std::move(captured);
  return true;
}

}  // namespace

void Router::add(Route route) {
  routes_.push_back(std::move(route));
  std::stable_sort(routes_.begin(), routes_.end(),
                   [](const Route& a, const Route& b) { return specificity(a) > specificity(b); });
}

RouteMatch Router::match(std::string_view method, std::string_view path) const {
  const std::string_view wanted = method == "HEAD" ? std::string_view("GET") : method;
  const auto request_parts = split_path(path);
  RouteMatch result;
  int matched_specificity = -1;
  for (const auto& route : routes_) {
    std::map<std::string, std::string> params;
    if (!path_matches(route, request_parts, params)) continue;
    const int spec = specificity(route);
    // Only the most specific matching template counts: /v1/users/me must not inherit /v1/users/{id}'s methods.
    if (matched_specificity >= 0 && spec < matched_specificity) break;
    matched_specificity = spec;
    if (route.method == wanted) {
      result.route = &route;
      result.params = std::move(params);
      result.allowed_methods.clear();
      return result;
    }
    result.allowed_methods.push_back(route.method);
  }
  return result;
}

}  // namespace usersd
