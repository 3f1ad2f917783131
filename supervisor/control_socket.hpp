// The local control socket (<runtime-dir>/usersd.sock): a unix stream socket, owner-only, where each
// connection carries one JSON request line and gets JSON reply lines back.
//   {"cmd":"status"} | {"cmd":"reload"} | {"cmd":"stop"} | {"cmd":"stop","fast":true} | {"cmd":"scale","value":"+1"}
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "supervisor/unique_fd.hpp"

namespace usersd {

// Binds and listens (non-blocking), replacing a stale socket file; mode 0600.
UniqueFd listen_control_socket(const std::string& path, std::string& error);

// Sends `request` and returns the first reply line. `error` explains a failure (no supervisor, timeout...).
// When `wait_for_close` is set, also waits (up to the timeout) until the supervisor closes the connection,
// which `stop` does only when it exits.
std::optional<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                              std::chrono::milliseconds timeout, std::string& error,
                                              bool wait_for_close = false);

// Writes one reply line to a control client (blocking briefly; clients are local and read promptly).
void send_control_reply(int fd, const nlohmann::json& reply);

}  // namespace usersd
