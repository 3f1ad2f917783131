#include "common/logging.hpp"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <functional>
#include <mutex>
#include <thread>

namespace usersd {
namespace {

// A payload from the server logger starts with a context header the formatter takes apart again:
//   RS <request id> RS 'P' <message>                 plain line
//   RS <request id> RS 'E' <json members> US <message>  structured line (log_event)
// The header is always written by us, so nothing a client sends can pose as fields.
constexpr char kRecordSep = '\x1e';
constexpr char kUnitSep = '\x1f';

struct Decoded {
  std::string_view request_id;
  std::string_view fields;   // JSON members without braces, already escaped
  std::string_view message;
};

Decoded decode(std::string_view payload) {
  Decoded d;
  d.message = payload;
  if (payload.size() < 3 || payload[0] != kRecordSep) return d;
  const auto end_id = payload.find(kRecordSep, 1);
  if (end_id == std::string_view::npos || end_id + 1 >= payload.size()) return d;
  d.request_id = payload.substr(1, end_id - 1);
  const char kind = payload[end_id + 1];
  std::string_view rest = payload.substr(end_id + 2);
  if (kind == 'E') {
    const auto sep = rest.find(kUnitSep);
    if (sep != std::string_view::npos) {
      d.fields = rest.substr(0, sep);
      rest = rest.substr(sep + 1);
    }
  }
  d.message = rest;
  return d;
}

std::string encode(std::string_view request_id, char kind, std::string_view fields, std::string_view message) {
  std::string out;
  out.reserve(request_id.size() + fields.size() + message.size() + 5);
  out += kRecordSep;
  out.append(request_id);
  out += kRecordSep;
  out += kind;
  if (kind == 'E') {
    out.append(fields);
    out += kUnitSep;
  }
  out.append(message);
  return out;
}

const char* level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
  }
}

// 2026-12-04T22:21:41.123Z
void append_time(spdlog::memory_buf_t& dest, spdlog::log_clock::time_point time) {
  const auto since_epoch = time.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - secs).count();
  const std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                              tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  dest.append(buf, buf + n);
}

void append(spdlog::memory_buf_t& dest, std::string_view text) { dest.append(text.data(), text.data() + text.size()); }

// {"time":..,"level":..,"component":..,"slot":..,"pid":..,"request_id":..,"msg":..,<fields>}
class JsonFormatter final : public spdlog::formatter {
 public:
  JsonFormatter(std::string component, int slot) : component_(std::move(component)), slot_(slot) {
    std::string head = ",\"component\":";
    append_json_string(head, component_);
    if (slot_ >= 0) head += ",\"slot\":" + std::to_string(slot_);
    head += ",\"pid\":" + std::to_string(::getpid());
    identity_ = std::move(head);
  }
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const Decoded d = decode(std::string_view(msg.payload.data(), msg.payload.size()));
    std::string line;
    line.reserve(192 + d.message.size() + d.fields.size());
    line += "{\"time\":\"";
    spdlog::memory_buf_t time;
    append_time(time, msg.time);
    line.append(time.data(), time.size());
    line += "\",\"level\":\"";
    line += level_name(msg.level);
    line += '"';
    line += identity_;
    if (!d.request_id.empty()) {
      line += ",\"request_id\":";
      append_json_string(line, d.request_id);
    }
    line += ",\"msg\":";
    append_json_string(line, d.message);
    if (!d.fields.empty()) {
      line += ',';
      line.append(d.fields);
    }
    line += "}\n";
    append(dest, line);
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(component_, slot_); }

 private:
  std::string component_;
  int slot_;
  std::string identity_;
};

// 2026-12-04T22:21:41.123Z info [worker 1 4242] message request_id=... {"fields":...}
class TextFormatter final : public spdlog::formatter {
 public:
  TextFormatter(std::string component, int slot) : component_(std::move(component)), slot_(slot) {
    tag_ = " [" + component_ + (slot_ >= 0 ? " " + std::to_string(slot_) : "") + " " + std::to_string(::getpid()) + "] ";
  }
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const Decoded d = decode(std::string_view(msg.payload.data(), msg.payload.size()));
    append_time(dest, msg.time);
    append(dest, " ");
    append(dest, level_name(msg.level));
    append(dest, tag_);
    append(dest, d.message);
    if (!d.request_id.empty()) {
      append(dest, " request_id=");
      append(dest, d.request_id);
    }
    if (!d.fields.empty()) {
      append(dest, " {");
      append(dest, d.fields);
      append(dest, "}");
    }
    append(dest, "\n");
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<TextFormatter>(component_, slot_); }

 private:
  std::string component_;
  int slot_;
  std::string tag_;
};

// Writes whole lines with write(2), several at a time while more are queued (fewer system calls under load),
// but never more than PIPE_BUF bytes at once: lines from the supervisor and its workers sharing stdout (a pipe
// or journald's socket) or one file (O_APPEND) never interleave mid-line. A file can be reopened, so
// logrotate's move-then-signal works without copytruncate.
class FdSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  explicit FdSink(std::string path) : path_(std::move(path)) { fd_ = open_file(); }
  ~FdSink() override {
    write_pending();
    if (!path_.empty() && fd_ >= 0) ::close(fd_);
  }
  void reopen() {
    if (path_.empty()) return;
    std::lock_guard lock(mutex_);
    write_pending();  // lines already formatted belong to the old file
    const int fresh = open_file();
    if (fresh < 0) return;  // keep writing to the old file rather than nowhere
    if (fd_ >= 0) ::close(fd_);
    fd_ = fresh;
  }
  // Tells the sink whether more lines wait in the queue (the async writer's), so it may batch.
  void set_backlog_probe(std::function<bool()> probe) { more_queued_ = std::move(probe); }
  uint64_t flushes() const { return flushes_.load(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    if (pending_.size() + formatted.size() > kMaxBatchBytes) write_pending();
    pending_.append(formatted.data(), formatted.size());
    if (pending_.size() >= kMaxBatchBytes || !more_queued_ || !more_queued_()) write_pending();
  }
  void flush_() override {
    write_pending();
    flushes_.fetch_add(1);
  }

 private:
  static constexpr size_t kMaxBatchBytes = PIPE_BUF;

  int open_file() const { return ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640); }

  void write_pending() {
    const char* data = pending_.data();
    size_t left = pending_.size();
    while (left > 0 && fd_ >= 0) {
      const ssize_t n = ::write(fd_, data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // nowhere to write (closed pipe, full disk): drop the lines, keep serving
      data += n;
      left -= static_cast<size_t>(n);
    }
    pending_.clear();
  }

  std::string path_;
  int fd_ = -1;
  std::string pending_;
  std::function<bool()> more_queued_;
  std::atomic<uint64_t> flushes_{0};
};

// The default logger of a server: stamps each line with this thread's request id, then hands it to the
// asynchronous backend (spdlog's async_logger cannot be subclassed; this runs on the calling thread).
class ContextLogger final : public spdlog::logger {
 public:
  explicit ContextLogger(std::shared_ptr<spdlog::logger> backend)
      : spdlog::logger("usersd"), backend_(std::move(backend)) {}
  void log_encoded(spdlog::level::level_enum level, std::string_view payload) {
    backend_->log(spdlog::log_clock::now(), spdlog::source_loc{}, level, payload);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override { backend_->flush(); }

 private:
  std::shared_ptr<spdlog::logger> backend_;
};

thread_local std::string current_request_id;

void ContextLogger::sink_it_(const spdlog::details::log_msg& msg) {
  const std::string payload =
      encode(current_request_id, 'P', {}, std::string_view(msg.payload.data(), msg.payload.size()));
  backend_->log(msg.time, msg.source, msg.level, payload);
}

constexpr size_t kQueueLines = 8192;

// Replaced only by setup calls, which happen before the process starts other threads.
std::mutex state_mutex;
std::shared_ptr<spdlog::details::thread_pool> writer_pool;
std::shared_ptr<FdSink> server_sink;
std::shared_ptr<ContextLogger> server_logger;

}  // namespace

void setup_logging(const LogConfig& config, const std::string& component, int slot) {
  std::lock_guard lock(state_mutex);
  auto sink = config.file.empty() ? std::make_shared<FdSink>(STDOUT_FILENO) : std::make_shared<FdSink>(config.file);
  if (config.format == "text") {
    sink->set_formatter(std::make_unique<TextFormatter>(component, slot));
  } else {
    sink->set_formatter(std::make_unique<JsonFormatter>(component, slot));
  }
  // The writer thread must not take signals: the supervisor reads them from a signalfd and workers from
  // sigwait in one thread, which only works while every other thread blocks them.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  auto pool = std::make_shared<spdlog::details::thread_pool>(kQueueLines, 1);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  // Called only on the pool's own thread, which the pool outlives (its destructor joins it).
  // "> 1", not "> 0": the pool's last item may be its terminate message (at exit), after which no line comes
  // to write what is batched.
  sink->set_backlog_probe([raw = pool.get()] { return raw->queue_size() > 1; });
  auto backend = std::make_shared<spdlog::async_logger>("usersd-writer", sink, pool,
                                                        spdlog::async_overflow_policy::overrun_oldest);
  backend->set_level(spdlog::level::trace);
  auto logger = std::make_shared<ContextLogger>(backend);
  logger->set_level(spdlog::level::from_str(config.level));
  spdlog::set_default_logger(logger);
  server_logger = logger;
  server_sink = sink;
  writer_pool = pool;
}

void setup_cli_logging(const std::string& level) {
  std::lock_guard lock(state_mutex);
  auto sink = std::make_shared<FdSink>(STDERR_FILENO);
  sink->set_formatter(std::make_unique<TextFormatter>("cli", -1));
  auto logger = std::make_shared<spdlog::logger>("usersd", sink);
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

void reopen_log_file() {
  std::lock_guard lock(state_mutex);
  if (server_sink) server_sink->reopen();
}

void flush_logs() {
  std::shared_ptr<FdSink> sink;
  std::shared_ptr<ContextLogger> logger;
  {
    std::lock_guard lock(state_mutex);
    sink = server_sink;
    logger = server_logger;
  }
  if (!sink || !logger) return;
  const uint64_t before = sink->flushes();
  logger->flush();  // queued behind every line logged so far; the writer counts it when it gets there
  for (int i = 0; i < 1000 && sink->flushes() == before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

uint64_t dropped_log_lines() {
  std::lock_guard lock(state_mutex);
  return writer_pool ? writer_pool->overrun_counter() : 0;
}

void set_log_request_id(std::string_view request_id) { current_request_id.assign(request_id); }

void log_event(spdlog::level::level_enum level, std::string_view message, const JsonFields& fields) {
  auto* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  const std::string payload = encode(current_request_id, 'E', fields.text(), message);
  if (auto* context = dynamic_cast<ContextLogger*>(logger)) {
    context->log_encoded(level, payload);
  } else {
    logger->log(level, "{}", payload);  // the CLI logger: its formatter decodes the same header
  }
}

}  // namespace usersd
