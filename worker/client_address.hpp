// The client address of a request, for access logs and rate limits: the one place X-Forwarded-For is read.
#pragma once

#include <httplib.h>

#include <string>

#include "worker/app.hpp"

namespace usersd {

std::string client_address(const App& app, const httplib::Request& req);

}  // namespace usersd
