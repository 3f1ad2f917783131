// The worker <-> supervisor channel: a SOCK_SEQPACKET socketpair, one small JSON object per message.
//   worker -> supervisor: {"type":"ready"}, {"type":"heartbeat","requests":N,"in_flight":N,"connections":N},
//                         {"type":"listener_closed"} (draining: no new connections reach this worker)
//   supervisor -> worker: {"type":"health_off"} (start failing /healthcheck before a stop)
// The worker finds its end at fd kChannelFd. EOF on it means the supervisor is gone.
#pragma once

#include <optional>

#include <nlohmann/json.hpp>

namespace usersd::channel {

inline constexpr int kChannelFd = 3;

bool send(int fd, const nlohmann::json& message);
// One message; nullopt on EOF, error or a malformed message.
std::optional<nlohmann::json> receive(int fd);

}  // namespace usersd::channel
