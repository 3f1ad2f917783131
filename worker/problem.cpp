#include "worker/problem.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/user_store.hpp"

namespace usersd {
namespace {

using json = nlohmann::json;

void send(httplib::Response& res, int status, json body) {
  // Quoting the request id lets a client's bug report lead straight to our log lines.
  if (res.has_header("X-Request-Id")) body["requestId"] = res.get_header_value("X-Request-Id");
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kProblemContentType);
}

}  // namespace

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Server Error" : "Client Error";
  }
}

void send_problem(httplib::Response& res, int status, const std::string& detail) {
  json body = {{"type", "about:blank"}, {"title", reason_phrase(status)}, {"status", status}};
  if (!detail.empty()) body["detail"] = detail;
  send(res, status, std::move(body));
}

void send_validation_problem(httplib::Response& res, const FieldErrors& errors) {
  json list = json::array();
  for (const auto& e : errors) list.push_back({{"field", e.field}, {"message", e.message}});
  send(res, 400,
       {{"type", "urn:usersd:problem:validation"},
        {"title", "The request has invalid fields"},
        {"status", 400},
        {"detail", std::to_string(errors.size()) + (errors.size() == 1 ? " field is" : " fields are") + " invalid"},
        {"errors", std::move(list)}});
}

void send_unauthorized(httplib::Response& res, const std::string& detail, bool token_was_sent) {
  // RFC 6750: no error code when the client sent no credentials at all.
  std::string challenge = R"(Bearer realm="usersd")";
  if (token_was_sent) challenge += R"(, error="invalid_token", error_description=")" + detail + "\"";
  res.set_header("WWW-Authenticate", challenge);
  send_problem(res, 401, detail);
}

void send_conflict(httplib::Response& res, const Error& error) {
  if (error.message == kUserNameTakenMessage) return send_problem(res, 409, "a user with this userName already exists");
  send_problem(res, 409, "a user with this email already exists");
}

void send_store_error(httplib::Response& res, const Error& error) {
  switch (error.code) {
    case Errc::not_found: return send_problem(res, 404, "no such user");
    case Errc::conflict: return send_problem(res, 409, error.message);
    case Errc::precondition_failed:
      return send_problem(res, 412, "the user was changed by another request; fetch it again");
    case Errc::invalid: return send_problem(res, 400, error.message);
    case Errc::unavailable:
      // The store's message can name files or hosts: log it, do not send it.
      spdlog::error("store unavailable: {}", error.message);
      res.set_header("Retry-After", "1");
      return send_problem(res, 503, "the user store is unavailable; retry shortly");
  }
}

}  // namespace usersd
