#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/json_text.hpp"
#include "common/logging.hpp"
#include "supervisor/metrics_exporter.hpp"
#include "supervisor/metrics_memory.hpp"
#include "worker/request_scope.hpp"

using namespace usersd;
using nlohmann::json;

namespace {

std::string json_string(std::string_view text) {
  std::string out;
  append_json_string(out, text);
  return out;
}

std::vector<json> read_lines(const std::filesystem::path& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

}  // namespace

TEST_CASE("JSON strings: escapes, control characters and invalid UTF-8 never break the line") {
  CHECK(json_string("plain") == "\"plain\"");
  CHECK(json_string("a\"b\\c") == R"("a\"b\\c")");
  CHECK(json_string("line\nbreak\ttab\r") == R"("line\nbreak\ttab\r")");
  CHECK(json_string(std::string("nul\0x", 5)) == R"("nul\u0000x")");
  CHECK(json_string("\x1b[31m") == R"("\u001b[31m")");
  CHECK(json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  CHECK(json_string("bad \xff byte") == R"("bad \ufffd byte")");
  CHECK(json_string("overlong \xc0\xaf") == R"("overlong \ufffd\ufffd")");
  CHECK(json_string("surrogate \xed\xa0\x80") == R"("surrogate \ufffd\ufffd\ufffd")");
  CHECK(json_string("cut \xe2\x82") == R"("cut \ufffd\ufffd")");
  // Whatever the input, the result parses back.
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  CHECK(json::parse(json_string(all)).get<std::string>().size() > 200);
}

TEST_CASE("JsonFields builds members in order") {
  JsonFields f;
  f.add("s", "x\"y").add("i", 42).add("u", uint64_t{7}).add("d", 1.23456).add("b", true).add_null("n");
  const json parsed = json::parse("{" + f.text() + "}");
  CHECK(parsed["s"] == "x\"y");
  CHECK(parsed["i"] == 42);
  CHECK(parsed["d"].get<double>() == doctest::Approx(1.235));
  CHECK(parsed["b"] == true);
  CHECK(parsed["n"].is_null());
  CHECK(f.text().rfind("\"s\":", 0) == 0);
}

TEST_CASE("server log lines: JSON with identity, the thread's request id, and event fields") {
  const auto path = std::filesystem::temp_directory_path() / ("usersd-log-test-" + std::to_string(getpid()) + ".log");
  std::filesystem::remove(path);
  LogConfig config;
  config.file = path.string();
  setup_logging(config, "worker", 3);
  spdlog::info("before any request");
  set_log_request_id("req-42");
  spdlog::warn("store is {}", "slow");
  log_event(spdlog::level::info, "access", JsonFields().add("status", 200).add("path", "/v1/users/\"x\""));
  set_log_request_id({});
  spdlog::error("after the request {}", "\x1e\x1ftried to spoof");
  flush_logs();
  const auto lines = read_lines(path);
  setup_cli_logging("warn");
  std::filesystem::remove(path);

  REQUIRE(lines.size() == 4);
  for (const auto& line : lines) {
    CHECK(line["component"] == "worker");
    CHECK(line["slot"] == 3);
    CHECK(line["pid"] == getpid());
    CHECK(line["time"].get<std::string>().size() == 24);
  }
  CHECK(lines[0]["msg"] == "before any request");
  CHECK_FALSE(lines[0].contains("request_id"));
  CHECK(lines[1]["level"] == "warn");
  CHECK(lines[1]["msg"] == "store is slow");
  CHECK(lines[1]["request_id"] == "req-42");
  CHECK(lines[2]["msg"] == "access");
  CHECK(lines[2]["status"] == 200);
  CHECK(lines[2]["path"] == "/v1/users/\"x\"");
  CHECK(lines[2]["request_id"] == "req-42");
  CHECK(lines[3]["level"] == "error");
  CHECK(lines[3]["msg"] == "after the request \x1e\x1ftried to spoof");
  CHECK_FALSE(lines[3].contains("request_id"));
}

TEST_CASE("request ids: bounded length, safe characters") {
  CHECK(valid_request_id("abc-123_x.y"));
  CHECK(valid_request_id(std::string(128, 'a')));
  CHECK_FALSE(valid_request_id(std::string(129, 'a')));
  CHECK_FALSE(valid_request_id(""));
  CHECK_FALSE(valid_request_id("a b"));
  CHECK_FALSE(valid_request_id("a\"b"));
  CHECK_FALSE(valid_request_id("a\nb"));
  CHECK_FALSE(valid_request_id("\xc3\xa9"));
}

TEST_CASE("Prometheus rendering sums every used slot and accumulates histogram buckets") {
  auto region = std::make_unique<metrics::Region>();  // value-initialised: all zero
  auto name_route = [&](int slot, int index, const char* name) {
    std::snprintf(region->slots[slot].route_names[index], metrics::kRouteNameBytes, "%s", name);
  };
  for (int slot : {0, 1}) {
    name_route(slot, 0, "unmatched");
    name_route(slot, 1, slot == 0 ? "/healthcheck" : "/v1/users/{id}");
    name_route(slot, 2, slot == 0 ? "/v1/users/{id}" : "/healthcheck");  // another build's order
    region->slots[slot].route_count = 3;
  }
  const int get = metrics::method_index("GET");
  region->slots[0].requests[1][get][1] = 5;  // /healthcheck GET 2xx
  region->slots[1].requests[2][get][1] = 7;  // /healthcheck GET 2xx, other slot, other index
  region->slots[1].requests[1][metrics::method_index("PATCH")][3] = 2;  // /v1/users/{id} PATCH 4xx
  region->slots[2].requests[0][get][3] = 100;  // slot 2 was never used: not counted
  region->slots[0].request_seconds[1].buckets[0] = 4;
  region->slots[0].request_seconds[1].buckets[metrics::kLatencyBuckets - 1] = 1;
  region->slots[0].request_seconds[1].sum_us = 6'000'000;
  region->slots[1].logins_failed = 3;
  region->slots[0].store_errors[static_cast<int>(metrics::StoreOp::find_by_id)] = 2;

  SupervisorFigures f;
  f.version = "1.2.3";
  f.slots_used = 2;
  f.workers_target = 2;
  f.reloads_ok = 4;
  f.workers = {WorkerFigures{0, true, 1, 1000, 1.5, 2, 3}, WorkerFigures{1, false, 0, 0, 0, 1, 1}};
  const std::string text = render_prometheus(region.get(), f);

  auto has = [&](const std::string& line) {
    INFO(line);
    CHECK(text.find(line + "\n") != std::string::npos);
  };
  has(R"(usersd_http_requests_total{route="/healthcheck",method="GET",status_class="2xx"} 12)");
  has(R"(usersd_http_requests_total{route="/v1/users/{id}",method="PATCH",status_class="4xx"} 2)");
  CHECK(text.find(R"(route="unmatched")") == std::string::npos);  // slot 2 was never used
  has(R"(usersd_http_request_duration_seconds_bucket{route="/healthcheck",le="0.001"} 4)");
  has(R"(usersd_http_request_duration_seconds_bucket{route="/healthcheck",le="5"} 4)");
  has(R"(usersd_http_request_duration_seconds_bucket{route="/healthcheck",le="+Inf"} 5)");
  has(R"(usersd_http_request_duration_seconds_count{route="/healthcheck"} 5)");
  has(R"(usersd_http_request_duration_seconds_sum{route="/healthcheck"} 6)");
  has(R"(usersd_logins_total{result="failure"} 3)");
  has(R"(usersd_store_errors_total{operation="find_by_id"} 2)");
  has("usersd_http_requests_in_flight 3");
  has(R"(usersd_worker_up{slot="1"} 0)");
  has(R"(usersd_worker_restarts_total{slot="0"} 1)");
  has(R"(usersd_worker_cpu_seconds_total{slot="0"} 1.5)");
  has(R"(usersd_supervisor_reloads_total{result="ok"} 4)");
  has(R"(usersd_build_info{version="1.2.3"} 1)");
  has("# TYPE usersd_http_request_duration_seconds histogram");
  CHECK(slot_requests_total(region->slots[1]) == 9);
}

TEST_CASE("lines still queued when the writer stops (process exit) are written, not lost") {
  const auto path = std::filesystem::temp_directory_path() / ("usersd-exit-test-" + std::to_string(getpid()) + ".log");
  std::filesystem::remove(path);
  LogConfig config;
  config.file = path.string();
  setup_logging(config, "worker", 0);
  for (int i = 0; i < 50; ++i) spdlog::critical("line {}", i);
  setup_logging(LogConfig{}, "worker", 0);  // replaces (and so stops) the writer without a flush, as exit does
  setup_cli_logging("warn");
  const auto lines = read_lines(path);
  std::filesystem::remove(path);
  REQUIRE(lines.size() == 50);
  CHECK(lines.back()["msg"] == "line 49");
}
