// Reads CPU limits and per-process CPU/RSS figures from /proc and the cgroup v2 filesystem.
#include "supervisor/process_info.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

namespace usersd {
namespace {

// /proc files report a size of 0, so read until EOF rather than trusting stat().
std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

std::string_view trim(std::string_view s) {
  const auto not_space = [](char c) { return c != ' ' && c != '\t' && c != '\n' && c != '\r'; };
  while (!s.empty() && !not_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && !not_space(s.back())) s.remove_suffix(1);
  return s;
}

template <typename Int>
std::optional<Int> parse_int(std::string_view s) {
  Int value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

std::vector<std::string_view> split_spaces(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const size_t start = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

int affinity_cpus() {
  // A fixed cpu_set_t only covers 1024 CPUs and sched_getaffinity fails with EINVAL on bigger
  // machines, so grow a dynamically sized set until the kernel's mask fits.
  for (int ncpus = 1024; ncpus <= (1 << 20); ncpus *= 2) {
    cpu_set_t* set = CPU_ALLOC(ncpus);
    if (set == nullptr) break;
    const size_t size = CPU_ALLOC_SIZE(ncpus);
    CPU_ZERO_S(size, set);
    const int rc = sched_getaffinity(0, size, set);
    const int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    const int err = errno;
    CPU_FREE(set);
    if (rc == 0) return count;
    if (err != EINVAL) break;
  }
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(std::min<long>(online, INT_MAX)) : 1;
}

// This process's cgroup v2 path ("0::/some/path"), split into components; nullopt without a v2 line.
std::optional<std::vector<std::string>> own_cgroup_components() {
  const auto text = read_file("/proc/self/cgroup");
  if (!text) return std::nullopt;
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    std::vector<std::string> parts;
    for (const auto& part : std::filesystem::path(line.substr(3))) {
      const std::string name = part.string();
      if (name.empty() || name == "/" || name == ".") continue;
      // Outside our cgroup namespace the path starts with ".."; never climb above the mount.
      if (name == "..") {
        if (!parts.empty()) parts.pop_back();
        continue;
      }
      parts.push_back(name);
    }
    return parts;
  }
  return std::nullopt;
}

std::optional<std::string> read_proc(pid_t pid, const char* file) {
  return read_file("/proc/" + std::to_string(pid) + "/" + file);
}

}  // namespace

std::optional<int> cpus_from_cpu_max(const std::string& line) {
  const auto fields = split_spaces(trim(line));
  if (fields.size() != 2) return std::nullopt;
  const auto period = parse_int<unsigned long long>(fields[1]);
  if (!period || *period == 0) return std::nullopt;
  if (fields[0] == "max") return std::nullopt;
  const auto quota = parse_int<unsigned long long>(fields[0]);
  if (!quota || *quota == 0) return std::nullopt;
  const unsigned long long cpus = *quota / *period + (*quota % *period != 0 ? 1 : 0);
  return static_cast<int>(std::min<unsigned long long>(cpus, INT_MAX));
}

int available_cpus(const std::string& cgroup_root) {
  int cpus = affinity_cpus();
  if (auto parts = own_cgroup_components()) {
    // Every ancestor's quota caps its whole subtree, so the tightest one along the path wins.
    std::filesystem::path dir = cgroup_root;
    std::vector<std::filesystem::path> dirs{dir};
    for (const auto& part : *parts) dirs.push_back(dir /= part);
    for (const auto& d : dirs) {
      if (auto text = read_file((d / "cpu.max").string())) {
        if (auto limit = cpus_from_cpu_max(*text)) cpus = std::min(cpus, *limit);
      }
    }
  }
  return std::max(cpus, 1);
}

std::optional<ProcessSample> sample_process(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const auto stat = read_proc(pid, "stat");
  if (!stat) return std::nullopt;
  // comm is "(name)" and the name itself may contain spaces and ')', so only the last ')' is reliable.
  const auto close_paren = stat->rfind(')');
  if (close_paren == std::string::npos) return std::nullopt;
  const auto fields = split_spaces(trim(std::string_view(*stat).substr(close_paren + 1)));
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  if (fields.size() < 13) return std::nullopt;
  const auto utime = parse_int<uint64_t>(fields[11]);
  const auto stime = parse_int<uint64_t>(fields[12]);
  if (!utime || !stime) return std::nullopt;

  const auto statm = read_proc(pid, "statm");
  if (!statm) return std::nullopt;
  const auto mem = split_spaces(trim(*statm));
  if (mem.size() < 2) return std::nullopt;
  const auto resident_pages = parse_int<uint64_t>(mem[1]);
  if (!resident_pages) return std::nullopt;
  const long page_size = sysconf(_SC_PAGESIZE);

  ProcessSample sample;
  sample.cpu_ticks = *utime + *stime;
  sample.rss_bytes = *resident_pages * static_cast<uint64_t>(page_size > 0 ? page_size : 4096);
  return sample;
}

double cpu_percent(const ProcessSample& before, const ProcessSample& after, double elapsed_seconds) {
  // A smaller "after" means the pid was reused by a different process; report nothing rather than garbage.
  if (elapsed_seconds <= 0 || after.cpu_ticks < before.cpu_ticks) return 0.0;
  const long ticks_per_second = sysconf(_SC_CLK_TCK);
  const double hz = ticks_per_second > 0 ? static_cast<double>(ticks_per_second) : 100.0;
  return 100.0 * static_cast<double>(after.cpu_ticks - before.cpu_ticks) / hz / elapsed_seconds;
}

std::optional<std::string> read_sysctl(const std::string& name) {
  if (name.empty() || name.find("..") != std::string::npos) return std::nullopt;
  const auto text = read_file("/proc/sys/" + name);
  if (!text) return std::nullopt;
  return std::string(trim(*text));
}

}  // namespace usersd
