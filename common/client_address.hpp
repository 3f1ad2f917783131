// Which address a request came from, when a load balancer may stand in front: X-Forwarded-For is
// believed only as far as it was written by proxies we trust (http.trusted_proxies). Anything to the
// left of the first untrusted hop is client-controlled and ignored, so rotating it gains nothing.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace usersd {

class TrustedProxies {
 public:
  TrustedProxies() = default;
  // Entries like "10.0.0.0/8", "127.0.0.1", "fd00::/8". Returns the error for the first bad entry.
  static std::variant<TrustedProxies, std::string> parse(const std::vector<std::string>& entries);
  // False for anything that is not an IP address.
  bool contains(std::string_view address) const;
  bool empty() const { return networks_.empty(); }

 private:
  struct Network {
    std::array<uint8_t, 16> address{};  // IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)
    int prefix_bits = 128;
  };
  std::vector<Network> networks_;
};

// The peer, unless the peer is trusted: then the right-most X-Forwarded-For entry that is not a trusted
// proxy; the left-most entry when every entry is trusted; the peer when the header is absent or an
// entry on the way is not an IP address. `x_forwarded_for` is all XFF header values joined with ",".
std::string resolve_client_address(std::string_view peer, std::string_view x_forwarded_for,
                                   const TrustedProxies& trusted);

}  // namespace usersd
