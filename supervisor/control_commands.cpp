// `usersd status | reload | stop | scale`: clients of the supervisor's control socket.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "supervisor/commands.hpp"
#include "supervisor/control_socket.hpp"
#include "supervisor/pidfile.hpp"

namespace usersd {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A zombie (exited, not yet reaped by its parent) counts as gone.
bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

std::optional<std::string> runtime_dir_of(const ConfigFlags& flags) {
  auto config = load_config_or_report(flags, /*resolve_secret=*/false);
  if (!config) return std::nullopt;
  return config->runtime_dir;
}

std::string human_duration(int64_t s) {
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m";
  if (s < 86400) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= 1024ull * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1fgb", b / (1024.0 * 1024 * 1024));
  else std::snprintf(buf, sizeof buf, "%.1fmb", b / (1024.0 * 1024));
  return buf;
}

std::string text(const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

void print_status_table(const nlohmann::json& status) {
  const auto& s = status["supervisor"];
  std::cout << "usersd " << text(s["version"]) << "  supervisor pid " << text(s["pid"]) << "  " << text(s["state"])
            << "  up " << human_duration(s["uptime_s"].get<int64_t>()) << "  mem " << human_bytes(s["rss_bytes"])
            << "\n"
            << "listen " << text(s["bind"]) << ":" << text(s["port"]) << "  store " << text(s["store"]) << "\n"
            << "binary " << text(s["binary"]) << "  config " << (s["config_file"] == "" ? "-" : text(s["config_file"]))
            << "\n"
            << "metrics " << (s.contains("metrics_url") ? text(s["metrics_url"]) : "-") << "  reloads "
            << (s.contains("reloads") ? text(s["reloads"].value("ok", nlohmann::json(0))) + " ok, " +
                                            text(s["reloads"].value("failed", nlohmann::json(0))) + " failed"
                                      : "-")
            << "\n\n";
  // requests: this process since it started; total: the slot's workers since the supervisor started.
  std::printf("%-5s %-8s %-16s %-7s %-8s %-6s %-9s %-10s %-10s %-9s %s\n", "slot", "pid", "status", "uptime",
              "restarts", "cpu", "mem", "requests", "total", "inflight", "last exit");
  auto row = [](const nlohmann::json& w, const std::string& slot) {
    std::printf("%-5s %-8s %-16s %-7s %-8s %-6s %-9s %-10s %-10s %-9s %s\n", slot.c_str(), text(w["pid"]).c_str(),
                text(w["state"]).c_str(), human_duration(w.value("uptime_s", int64_t{0})).c_str(),
                w.contains("restarts") ? text(w["restarts"]).c_str() : "-",
                (text(w["cpu_percent"]) + "%").c_str(), human_bytes(w.value("rss_bytes", uint64_t{0})).c_str(),
                text(w["requests"]).c_str(), w.contains("requests_total") ? text(w["requests_total"]).c_str() : "-",
                text(w["in_flight"]).c_str(), w.contains("last_exit") ? text(w["last_exit"]).c_str() : "-");
  };
  for (const auto& w : status["workers"]) row(w, text(w["slot"]));
  for (const auto& w : status["other_processes"]) row(w, text(w["slot"]) + "*");
  if (!status["other_processes"].empty()) std::cout << "* replaced or removed, finishing its requests\n";
}

int request(const ConfigFlags& flags, const nlohmann::json& body, seconds timeout, nlohmann::json& reply,
            bool wait_for_close = false) {
  auto runtime_dir = runtime_dir_of(flags);
  if (!runtime_dir) return 1;
  std::string error;
  auto answer = control_request(*runtime_dir + "/usersd.sock", body, timeout, error, wait_for_close);
  if (!answer) {
    std::cerr << "usersd: " << error << "\n";
    return 1;
  }
  reply = *answer;
  return 0;
}

}  // namespace

int run_status(const ConfigFlags& flags, bool as_json) {
  nlohmann::json reply;
  if (int rc = request(flags, {{"cmd", "status"}}, seconds(10), reply); rc != 0) return rc;
  if (as_json) {
    std::cout << reply.dump(2) << "\n";
  } else {
    print_status_table(reply);
  }
  return 0;
}

int run_reload(const ConfigFlags& flags) {
  nlohmann::json reply;
  // Generous: each slot may take up to ready_timeout; the supervisor answers when every slot is replaced.
  if (int rc = request(flags, {{"cmd", "reload"}}, seconds(3600), reply); rc != 0) return rc;
  if (!reply.value("ok", false)) {
    std::cerr << "usersd: reload failed: " << reply.value("error", "unknown error") << "\n";
    return 1;
  }
  std::cout << reply.value("message", "reloaded") << "\n";
  return 0;
}

int run_scale(const ConfigFlags& flags, const std::string& value) {
  nlohmann::json reply;
  if (int rc = request(flags, {{"cmd", "scale"}, {"value", value}}, seconds(3600), reply); rc != 0) return rc;
  if (!reply.value("ok", false)) {
    std::cerr << "usersd: scale failed: " << reply.value("error", "unknown error") << "\n";
    return 1;
  }
  std::cout << "scaled to " << reply["workers"] << " workers\n";
  return 0;
}

int run_stop(const ConfigFlags& flags, bool fast) {
  nlohmann::json reply;
  // The supervisor closes our connection only when it exits; the timeout covers drain_delay + graceful_timeout.
  if (int rc = request(flags, {{"cmd", "stop"}, {"fast", fast}}, seconds(3600), reply, true); rc != 0) return rc;
  const pid_t pid = reply.value("pid", 0);
  // The socket closing means the supervisor is exiting; wait until the process is really gone.
  for (int i = 0; i < 200 && pid > 0 && process_alive(pid); ++i) std::this_thread::sleep_for(milliseconds(25));
  std::cout << "usersd stopped\n";
  return 0;
}

}  // namespace usersd
