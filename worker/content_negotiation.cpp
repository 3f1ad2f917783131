#include "worker/content_negotiation.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace usersd {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

struct Entry {
  std::string_view name;
  double q = 1.0;
};

// Calls fn(entry) for each comma-separated element.
template <class Fn>
void for_each_entry(std::string_view header, Fn fn) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    Entry entry;
    const auto semi = item.find(';');
    entry.name = trim(item.substr(0, semi));
    if (semi != std::string_view::npos) {
      std::string_view params = item.substr(semi + 1);
      while (!params.empty()) {
        const auto next = params.find(';');
        const std::string_view param = trim(params.substr(0, next));
        if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
          entry.q = std::clamp(std::strtod(std::string(param.substr(2)).c_str(), nullptr), 0.0, 1.0);
        }
        if (next == std::string_view::npos) break;
        params.remove_prefix(next + 1);
      }
    }
    if (!entry.name.empty()) fn(entry);
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
}

// 3: exact, 2: type/*, 1: */* or *, 0: no match.
int match_rank(std::string_view pattern, std::string_view value) {
  if (iequals(pattern, value)) return 3;
  if (pattern == "*/*" || pattern == "*") return 1;
  const auto slash = value.find('/');
  if (slash != std::string_view::npos && pattern.size() == slash + 2 && pattern.substr(slash) == "/*" &&
      iequals(pattern.substr(0, slash), value.substr(0, slash))) {
    return 2;
  }
  return 0;
}

}  // namespace

double quality_of(std::string_view header, std::string_view value) {
  int best_rank = 0;
  double q = 0;
  for_each_entry(header, [&](const Entry& e) {
    const int rank = match_rank(e.name, value);
    if (rank > best_rank) {
      best_rank = rank;
      q = e.q;
    }
  });
  return q;
}

std::string accepted_encodings(std::string_view header) {
  std::string out;
  for (const char* coding : {"br", "gzip"}) {
    if (quality_of(header, coding) > 0) out += (out.empty() ? "" : ", ") + std::string(coding);
  }
  return out;
}

}  // namespace usersd
