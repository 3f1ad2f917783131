// /v1/users: list, read, create (admin), replace, patch, delete.
#include <charconv>

#include "common/ids.hpp"
#include "common/jwt.hpp"
#include "common/time_format.hpp"
#include "worker/problem.hpp"
#include "worker/routes.hpp"
#include "worker/user_json.hpp"

namespace usersd {
namespace {

constexpr int kDefaultLimit = 20;
constexpr int kMaxLimit = 100;
constexpr int64_t kMaxPage = 1000000;
// Read-modify-write rounds for an update without If-Match that keeps losing races; then 412 after all.
constexpr int kUnconditionalWriteAttempts = 8;

// --- listing -------------------------------------------------------------------------------------------

std::optional<int64_t> parse_int(const std::string& text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// Cursors are opaque to clients: base64url("a:<id>") pages forward after id, "b:<id>" backward before it.
std::string make_cursor(char direction, const std::string& id) { return base64url_encode(std::string(1, direction) + ":" + id); }

bool read_cursor(const std::string& cursor, PageRequest& page) {
  auto decoded = base64url_decode(cursor);
  if (!decoded) return false;
  const std::string& text = decoded.value();
  if (text.size() != 26 || text[1] != ':' || !is_object_id(std::string_view(text).substr(2))) return false;
  if (text[0] == 'a') page.after_id = text.substr(2);
  else if (text[0] == 'b') page.before_id = text.substr(2);
  else return false;
  return true;
}

nlohmann::json link(const std::string& href) { return {{"href", href}}; }

void list_users(App& app, const httplib::Request& req, httplib::Response& res) {
  FieldErrors errors;
  PageRequest page;
  page.limit = kDefaultLimit;
  if (req.has_param("limit")) {
    auto limit = parse_int(req.get_param_value("limit"));
    if (!limit || *limit < 1 || *limit > kMaxLimit) errors.push_back({"limit", "must be an integer from 1 to 100"});
    else page.limit = static_cast<int>(*limit);
  }
  std::optional<int64_t> page_number;
  if (req.has_param("page")) {
    page_number = parse_int(req.get_param_value("page"));
    if (!page_number || *page_number < 1 || *page_number > kMaxPage) {
      errors.push_back({"page", "must be an integer from 1 to 1000000"});
    }
  }
  if (req.has_param("cursor")) {
    if (req.has_param("page")) errors.push_back({"cursor", "cannot be combined with page"});
    else if (!read_cursor(req.get_param_value("cursor"), page)) errors.push_back({"cursor", "is not a cursor this server issued"});
  }
  if (!errors.empty()) return send_validation_problem(res, errors);
  if (page_number) page.offset = (*page_number - 1) * page.limit;

  auto result = app.store->list(page);
  if (!result) return send_store_error(res, result.error());
  const UserPage& found = result.value();

  const std::string base = "/v1/users?limit=" + std::to_string(page.limit);
  nlohmann::json items = nlohmann::json::array();
  for (const auto& user : found.users) items.push_back(user_to_json(user));
  nlohmann::json links = {{"first", link(page_number ? base + "&page=1" : base)}};
  nlohmann::json body = {{"items", std::move(items)}, {"total", found.total}, {"limit", page.limit}};
  if (page_number) {
    body["page"] = *page_number;
    links["self"] = link(base + "&page=" + std::to_string(*page_number));
    if (found.has_more_after) links["next"] = link(base + "&page=" + std::to_string(*page_number + 1));
    if (*page_number > 1) links["prev"] = link(base + "&page=" + std::to_string(*page_number - 1));
  } else {
    links["self"] = link(req.has_param("cursor") ? base + "&cursor=" + req.get_param_value("cursor") : base);
    if (!found.users.empty()) {
      if (found.has_more_after) links["next"] = link(base + "&cursor=" + make_cursor('a', found.users.back().id));
      if (found.has_more_before) links["prev"] = link(base + "&cursor=" + make_cursor('b', found.users.front().id));
    }
  }
  body["_links"] = std::move(links);
  send_json(res, 200, body);
}

// --- single user ---------------------------------------------------------------------------------------

void send_user(httplib::Response& res, const User& user) {
  res.set_header("ETag", etag_of(user));
  send_json(res, 200, user_to_json(user));
}

void get_user(App& app, const httplib::Request& req, httplib::Response& res, const std::string& id) {
  auto user = app.store->find_by_id(id);
  if (!user) return send_store_error(res, user.error());
  if (req.has_header("If-None-Match") && if_none_match_matches(req.get_header_value("If-None-Match"), user.value())) {
    res.status = 304;
    res.set_header("ETag", etag_of(user.value()));
    return;
  }
  send_user(res, user.value());
}

// Loads the target of a write after checking the caller may write it.
std::optional<User> load_for_write(App& app, httplib::Response& res, const RequestContext& ctx) {
  const User& caller = *ctx.caller;
  const std::string& id = ctx.params.at("id");
  if (caller.role != Role::admin && caller.id != id) {
    send_problem(res, 403, "you can change only your own account");
    return std::nullopt;
  }
  auto target = app.store->find_by_id(id);
  if (!target) {
    send_store_error(res, target.error());
    return std::nullopt;
  }
  return std::move(target).value();
}

// RFC 9110 If-Match: a stale ETag means the client would overwrite a change it has not seen.
bool if_match_holds(const httplib::Request& req, httplib::Response& res, const User& current) {
  if (!req.has_header("If-Match") || if_match_satisfied(req.get_header_value("If-Match"), current)) return true;
  send_problem(res, 412, "If-Match does not match the current ETag " + etag_of(current));
  return false;
}

void update_user(App& app, const httplib::Request& req, httplib::Response& res, const RequestContext& ctx,
                 UserOperation op) {
  auto user = load_for_write(app, res, ctx);
  if (!user) return;
  // A malformed request is a 400 whatever its preconditions say, so the body is checked first.
  auto body = parse_json_body(ctx.body, res);
  if (!body) return;
  UserInput input;
  const PasswordLengths lengths{app.hasher->policy().min_length, app.hasher->policy().max_length};
  if (auto errors = parse_user_input(*body, op, ctx.caller->role == Role::admin, lengths, input); !errors.empty()) {
    return send_validation_problem(res, errors);
  }
  if (!if_match_holds(req, res, *user)) return;
  // The store writes only if the version is still the one we read. With If-Match the client asked for
  // exactly that (412 otherwise); without it, another writer got in first, so apply the change again
  // to the fresh record instead of failing a request that set no precondition.
  const bool conditional = req.has_header("If-Match");
  for (int attempt = 1;; ++attempt) {
    apply_user_input(input, op, *user);
    user->updated_at_ms = now_ms();
    auto updated = app.store->update(*user);
    if (updated) return send_user(res, updated.value());
    const Error& error = updated.error();
    if (error.code == Errc::conflict) return send_conflict(res, error);
    if (error.code != Errc::precondition_failed || conditional || attempt == kUnconditionalWriteAttempts) {
      return send_store_error(res, error);
    }
    user = load_for_write(app, res, ctx);
    if (!user) return;
  }
}

void delete_user(App& app, const httplib::Request& req, httplib::Response& res, const RequestContext& ctx) {
  auto user = load_for_write(app, res, ctx);
  if (!user || !if_match_holds(req, res, *user)) return;
  const bool conditional = req.has_header("If-Match");
  if (auto removed = app.store->remove(user->id, conditional ? std::optional(user->version) : std::nullopt); !removed) {
    return send_store_error(res, removed.error());
  }
  res.status = 204;
}

}  // namespace

void add_user_routes(Router& router, App& app) {
  const MediaTypes json_only = {"application/json"};
  const MediaTypes merge_patch = {"application/merge-patch+json", "application/json"};
  router.add({"GET", "/v1/users", true, {}, [&app](const auto& req, auto& res, auto&) { list_users(app, req, res); }});
  router.add({"POST", "/v1/users", true, json_only, [&app](const auto&, auto& res, auto& ctx) {
                if (ctx.caller->role != Role::admin) return send_problem(res, 403, "only admins can create users");
                create_user(app, ctx, res, UserOperation::create);
              }});
  router.add({"GET", "/v1/users/me", true, {},
              [](const auto&, auto& res, auto& ctx) { send_user(res, *ctx.caller); }});
  router.add({"GET", "/v1/users/{id}", true, {},
              [&app](const auto& req, auto& res, auto& ctx) { get_user(app, req, res, ctx.params.at("id")); }});
  // PUT replaces the version the client read (If-Match). Without If-Match it merges, as the Node.js
  // service's PUT did (fields sent are set, null clears, absent ones stay): its clients send partial
  // bodies and no If-Match, and a replace would silently erase what they left out.
  router.add({"PUT", "/v1/users/{id}", true, json_only, [&app](const auto& req, auto& res, auto& ctx) {
                update_user(app, req, res, ctx,
                            req.has_header("If-Match") ? UserOperation::replace : UserOperation::patch);
              }});
  router.add({"PATCH", "/v1/users/{id}", true, merge_patch, [&app](const auto& req, auto& res, auto& ctx) {
                update_user(app, req, res, ctx, UserOperation::patch);
              }});
  router.add({"DELETE", "/v1/users/{id}", true, {},
              [&app](const auto& req, auto& res, auto& ctx) { delete_user(app, req, res, ctx); }});
}

}  // namespace usersd
