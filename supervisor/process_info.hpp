// Facts about processes and the machine the supervisor needs: CPUs we may use, a process's CPU time and RSS.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace usersd {

// CPUs this process may run on: the affinity mask, further limited by a cgroup v2 cpu.max quota
// (rounded up), never less than 1. `cgroup_root` is for tests (default /sys/fs/cgroup, reading
// /proc/self/cgroup to find this process's cgroup directory).
int available_cpus(const std::string& cgroup_root = "/sys/fs/cgroup");

// Parses a cgroup v2 cpu.max line ("max 100000" or "150000 100000"): CPUs allowed, rounded up; nullopt = no limit.
std::optional<int> cpus_from_cpu_max(const std::string& line);

struct ProcessSample {
  uint64_t cpu_ticks = 0;   // utime + stime from /proc/<pid>/stat, in clock ticks
  uint64_t rss_bytes = 0;   // resident set size
};

// nullopt when the process does not exist (or /proc cannot be read).
std::optional<ProcessSample> sample_process(pid_t pid);

// CPU percent of one core between two samples taken `elapsed_seconds` apart.
double cpu_percent(const ProcessSample& before, const ProcessSample& after, double elapsed_seconds);

// Reads a sysctl as text from /proc/sys (e.g. "net/ipv4/tcp_migrate_req"); nullopt when absent.
std::optional<std::string> read_sysctl(const std::string& name);

}  // namespace usersd
