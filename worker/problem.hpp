// RFC 9457 problem details: every error response the API sends is built here.
#pragma once

#include <httplib.h>

#include <string>

#include "common/result.hpp"
#include "common/user_input.hpp"

namespace usersd {

inline constexpr const char* kProblemContentType = "application/problem+json";
inline constexpr const char* kJsonContentType = "application/json";

// Generic problem: type about:blank, title = the status's reason phrase.
void send_problem(httplib::Response& res, int status, const std::string& detail = "");
// 400 with one entry per invalid field.
void send_validation_problem(httplib::Response& res, const FieldErrors& errors);
// 401 with the WWW-Authenticate challenge.
void send_unauthorized(httplib::Response& res, const std::string& detail, bool token_was_sent);
// Maps a store error to its response (404, 409, 412, 503...).
// 409 naming the unique field that clashed (email or userName), never the value.
void send_conflict(httplib::Response& res, const Error& error);
void send_store_error(httplib::Response& res, const Error& error);

const char* reason_phrase(int status);

}  // namespace usersd
