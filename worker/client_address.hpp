// TEMPORARY stand-in for the lead's shared API (CLIENT_ADDRESS.md); replaced by main's version on merge.
#pragma once

#include <httplib.h>

#include <string>

#include "worker/app.hpp"

namespace usersd {
inline std::string client_address(const App&, const httplib::Request& req) { return req.remote_addr; }
}  // namespace usersd
