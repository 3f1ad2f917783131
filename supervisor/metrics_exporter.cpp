#include "supervisor/metrics_exporter.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <cstdio>
#include <map>
#include <string_view>
#include <tuple>

namespace usersd {
namespace {

using namespace metrics;

struct HistogramTotals {
  std::array<uint64_t, kLatencyBuckets> buckets{};
  uint64_t sum_us = 0;
};

void add(HistogramTotals& into, const Histogram& h) {
  for (int i = 0; i < kLatencyBuckets; ++i) into.buckets[static_cast<size_t>(i)] += h.buckets[i].load(std::memory_order_relaxed);
  into.sum_us += h.sum_us.load(std::memory_order_relaxed);
}

uint64_t count(const HistogramTotals& h) {
  uint64_t n = 0;
  for (uint64_t b : h.buckets) n += b;
  return n;
}

// Label values are our own route templates and names, but escape as the format requires anyway.
std::string label_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string number(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(std::string_view name, const std::string& labels, const std::string& value) {
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(std::string_view name, const std::string& labels, uint64_t value) { sample(name, labels, std::to_string(value)); }
  void histogram(std::string_view name, const std::string& labels, const HistogramTotals& h) {
    uint64_t cumulative = 0;
    const std::string prefix = labels.empty() ? "" : labels + ",";
    for (int i = 0; i < kLatencyBuckets; ++i) {
      cumulative += h.buckets[static_cast<size_t>(i)];
      const std::string le = i < kLatencyBuckets - 1 ? number(kLatencyBounds[i]) : "+Inf";
      sample(std::string(name) + "_bucket", prefix + "le=\"" + le + "\"", cumulative);
    }
    sample(std::string(name) + "_sum", labels, number(static_cast<double>(h.sum_us) / 1e6));
    sample(std::string(name) + "_count", labels, cumulative);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

struct Totals {
  std::map<std::tuple<std::string, int, int>, uint64_t> requests;  // (route, method, status class)
  std::map<std::string, HistogramTotals> request_seconds;           // by route
  uint64_t response_bytes = 0, logins_ok = 0, logins_failed = 0, log_dropped = 0;
  std::array<uint64_t, kStoreOps> store_errors{};
  std::array<HistogramTotals, kStoreOps> store_seconds{};
};

Totals sum_slots(const Region& region, int slots_used) {
  Totals t;
  for (int s = 0; s < slots_used && s < kMaxSlots; ++s) {
    const SlotCounters& slot = region.slots[s];
    const uint32_t routes = std::min<uint32_t>(slot.route_count.load(std::memory_order_acquire), kMaxRoutes);
    for (uint32_t r = 0; r < routes; ++r) {
      const std::string route(slot.route_names[r], strnlen(slot.route_names[r], kRouteNameBytes));
      for (int m = 0; m < kMethods; ++m) {
        for (int c = 0; c < kStatusClasses; ++c) {
          const uint64_t n = slot.requests[r][m][c].load(std::memory_order_relaxed);
          if (n > 0) t.requests[{route, m, c}] += n;
        }
      }
      add(t.request_seconds[route], slot.request_seconds[r]);
    }
    t.response_bytes += slot.response_bytes.load(std::memory_order_relaxed);
    t.logins_ok += slot.logins_succeeded.load(std::memory_order_relaxed);
    t.logins_failed += slot.logins_failed.load(std::memory_order_relaxed);
    t.log_dropped += slot.log_lines_dropped.load(std::memory_order_relaxed);
    for (int op = 0; op < kStoreOps; ++op) {
      t.store_errors[static_cast<size_t>(op)] += slot.store_errors[op].load(std::memory_order_relaxed);
      add(t.store_seconds[static_cast<size_t>(op)], slot.store_seconds[op]);
    }
  }
  return t;
}

}  // namespace

std::string render_prometheus(const Region* region, const SupervisorFigures& f) {
  Writer w;
  if (region != nullptr) {
    const Totals t = sum_slots(*region, f.slots_used);
    w.family("usersd_http_requests_total", "counter", "HTTP requests answered, by route template, method and status class.");
    for (const auto& [key, n] : t.requests) {
      const auto& [route, method, status_class] = key;
      w.sample("usersd_http_requests_total",
               "route=\"" + label_value(route) + "\",method=\"" + std::string(kMethodNames[method]) +
                   "\",status_class=\"" + std::to_string(status_class + 1) + "xx\"",
               n);
    }
    w.family("usersd_http_request_duration_seconds", "histogram",
             "Time from the first byte of a request to its response being written, by route template.");
    for (const auto& [route, h] : t.request_seconds) {
      if (count(h) == 0) continue;  // routes never requested: no series, as for the counter above
      w.histogram("usersd_http_request_duration_seconds", "route=\"" + label_value(route) + "\"", h);
    }
    w.family("usersd_http_response_body_bytes_total", "counter", "Response body bytes sent.");
    w.sample("usersd_http_response_body_bytes_total", "", t.response_bytes);
    w.family("usersd_logins_total", "counter", "Login attempts with a verdict: success (200) or failure (401).");
    w.sample("usersd_logins_total", R"(result="success")", t.logins_ok);
    w.sample("usersd_logins_total", R"(result="failure")", t.logins_failed);
    w.family("usersd_store_errors_total", "counter", "Store calls that found the store unavailable, by operation.");
    for (int op = 0; op < kStoreOps; ++op) {
      w.sample("usersd_store_errors_total", "operation=\"" + std::string(kStoreOpNames[op]) + "\"",
               t.store_errors[static_cast<size_t>(op)]);
    }
    w.family("usersd_store_operation_duration_seconds", "histogram", "Time spent in store calls, by operation.");
    for (int op = 0; op < kStoreOps; ++op) {
      if (count(t.store_seconds[static_cast<size_t>(op)]) == 0) continue;
      w.histogram("usersd_store_operation_duration_seconds", "operation=\"" + std::string(kStoreOpNames[op]) + "\"",
                  t.store_seconds[static_cast<size_t>(op)]);
    }
    w.family("usersd_log_lines_dropped_total", "counter",
             "Log lines dropped because the log queue was full (the writer could not keep up).");
    w.sample("usersd_log_lines_dropped_total", R"(process="workers")", t.log_dropped);
    w.sample("usersd_log_lines_dropped_total", R"(process="supervisor")", f.log_lines_dropped);
  }
  int in_flight = 0, connections = 0;
  for (const auto& wf : f.workers) {
    in_flight += wf.in_flight;
    connections += wf.connections;
  }
  w.family("usersd_http_requests_in_flight", "gauge", "Requests being read, handled or written (as of the workers' last heartbeat).");
  w.sample("usersd_http_requests_in_flight", "", static_cast<uint64_t>(in_flight));
  w.family("usersd_http_connections_open", "gauge", "Open client connections (as of the workers' last heartbeat).");
  w.sample("usersd_http_connections_open", "", static_cast<uint64_t>(connections));

  auto per_worker = [&](std::string_view name, std::string_view type, std::string_view help, auto value) {
    w.family(name, type, help);
    for (const auto& wf : f.workers) w.sample(name, "slot=\"" + std::to_string(wf.slot) + "\"", value(wf));
  };
  per_worker("usersd_worker_up", "gauge", "1 when a worker is online in the slot.",
             [](const WorkerFigures& wf) { return std::string(wf.up ? "1" : "0"); });
  per_worker("usersd_worker_restarts_total", "counter", "Unexpected worker exits the supervisor restarted, by slot.",
             [](const WorkerFigures& wf) { return std::to_string(wf.restarts); });
  per_worker("usersd_worker_resident_memory_bytes", "gauge", "Resident set size of the slot's worker.",
             [](const WorkerFigures& wf) { return std::to_string(wf.rss_bytes); });
  per_worker("usersd_worker_cpu_seconds_total", "counter",
             "CPU time (user + system) of the slot's current worker process; resets when it is replaced.",
             [](const WorkerFigures& wf) { return number(wf.cpu_seconds); });

  w.family("usersd_workers_target", "gauge", "Worker processes the supervisor keeps running.");
  w.sample("usersd_workers_target", "", static_cast<uint64_t>(f.workers_target));
  w.family("usersd_supervisor_reloads_total", "counter", "Rolling reloads, by result.");
  w.sample("usersd_supervisor_reloads_total", R"(result="ok")", f.reloads_ok);
  w.sample("usersd_supervisor_reloads_total", R"(result="failed")", f.reloads_failed);
  w.family("usersd_supervisor_resident_memory_bytes", "gauge", "Resident set size of the supervisor.");
  w.sample("usersd_supervisor_resident_memory_bytes", "", f.rss_bytes);
  w.family("usersd_supervisor_cpu_seconds_total", "counter", "CPU time (user + system) of the supervisor.");
  w.sample("usersd_supervisor_cpu_seconds_total", "", number(f.cpu_seconds));
  w.family("usersd_build_info", "gauge", "Always 1; the version is in the label.");
  w.sample("usersd_build_info", "version=\"" + label_value(f.version) + "\"", uint64_t{1});
  return w.take();
}

}  // namespace usersd
