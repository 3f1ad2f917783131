#include "common/client_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <optional>

namespace usersd {
namespace {

using Address = std::array<uint8_t, 16>;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// IPv4 addresses become IPv4-mapped IPv6, so "10.0.0.1" and "::ffff:10.0.0.1" (how a dual-stack
// listener reports an IPv4 peer) are the same address.
struct ParsedAddress {
  Address bytes{};
  bool ipv4 = false;
};

std::optional<ParsedAddress> parse_address(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  const std::string s(text);
  ParsedAddress parsed;
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    parsed.bytes[10] = parsed.bytes[11] = 0xff;
    std::copy_n(reinterpret_cast<const uint8_t*>(&v4), 4, parsed.bytes.begin() + 12);
    parsed.ipv4 = true;
    return parsed;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::copy_n(reinterpret_cast<const uint8_t*>(&v6), 16, parsed.bytes.begin());
    return parsed;
  }
  return std::nullopt;
}

bool in_network(const Address& a, const Address& network, int prefix_bits) {
  const int whole = prefix_bits / 8;
  if (!std::equal(a.begin(), a.begin() + whole, network.begin())) return false;
  const int rest = prefix_bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (network[whole] & mask);
}

// An X-Forwarded-For entry is an address; some proxies add a port ("1.2.3.4:5678", "[::1]:5678").
std::optional<std::string> forwarded_address(std::string_view entry) {
  entry = trim(entry);
  if (!entry.empty() && entry.front() == '[') {
    const auto close = entry.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    entry = entry.substr(1, close - 1);
  } else if (std::count(entry.begin(), entry.end(), ':') == 1) {
    entry = entry.substr(0, entry.find(':'));
  }
  if (!parse_address(entry)) return std::nullopt;
  return std::string(entry);
}

}  // namespace

std::variant<TrustedProxies, std::string> TrustedProxies::parse(const std::vector<std::string>& entries) {
  TrustedProxies trusted;
  for (const auto& entry : entries) {
    const std::string_view text(entry);
    const auto slash = text.find('/');
    const auto address = parse_address(text.substr(0, slash));
    if (!address) return "\"" + entry + "\" is not an IP address or CIDR like 10.0.0.0/8";
    Network network{address->bytes, 128};
    if (slash != std::string_view::npos) {
      const std::string_view bits = text.substr(slash + 1);
      const int max_bits = address->ipv4 ? 32 : 128;
      int value = -1;
      const auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), value);
      if (ec != std::errc() || end != bits.data() + bits.size() || value < 0 || value > max_bits) {
        return "\"" + entry + "\" has a prefix length outside 0-" + std::to_string(max_bits);
      }
      network.prefix_bits = address->ipv4 ? 96 + value : value;
    }
    trusted.networks_.push_back(network);
  }
  return trusted;
}

bool TrustedProxies::contains(std::string_view address) const {
  const auto parsed = parse_address(trim(address));
  if (!parsed) return false;
  return std::any_of(networks_.begin(), networks_.end(),
                     [&](const Network& n) { return in_network(parsed->bytes, n.address, n.prefix_bits); });
}

std::string resolve_client_address(std::string_view peer, std::string_view x_forwarded_for,
                                   const TrustedProxies& trusted) {
  std::string client(peer);
  if (!trusted.contains(peer)) return client;
  // Walk right to left: each trusted hop vouches for the entry to its left.
  std::string_view rest = x_forwarded_for;
  while (!trim(rest).empty()) {
    const auto comma = rest.rfind(',');
    const std::string_view entry = comma == std::string_view::npos ? rest : rest.substr(comma + 1);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    if (trim(entry).empty()) continue;
    const auto address = forwarded_address(entry);
    if (!address) return client;  // garbage from an untrusted hop: believe nothing further left
    client = *address;
    if (!trusted.contains(client)) return client;
  }
  return client;
}

}  // namespace usersd
