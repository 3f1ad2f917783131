#include "common/logging.hpp"

#include <spdlog/details/file_helper.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace usersd {
namespace {

// A file sink that can reopen its path, so logrotate's move-then-signal works without copytruncate.
class ReopenableFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ReopenableFileSink(const std::string& path) { file_.open(path, /*truncate=*/false); }
  void reopen() {
    std::lock_guard lock(mutex_);
    file_.reopen(/*truncate=*/false);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    file_.write(formatted);
  }
  void flush_() override { file_.flush(); }

 private:
  spdlog::details::file_helper file_;
};

std::mutex file_sink_mutex;
std::shared_ptr<ReopenableFileSink> file_sink;

}  // namespace

void setup_logging(const LogConfig& config, const std::string& component) {
  spdlog::sink_ptr sink;
  {
    std::lock_guard lock(file_sink_mutex);
    if (config.file.empty()) {
      file_sink.reset();
      sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    } else {
      file_sink = std::make_shared<ReopenableFileSink>(config.file);
      sink = file_sink;
    }
  }
  auto logger = std::make_shared<spdlog::logger>("usersd", sink);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l [" + component + " %P] %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::from_str(config.level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void reopen_log_file() {
  std::lock_guard lock(file_sink_mutex);
  if (file_sink) file_sink->reopen();
}

}  // namespace usersd
