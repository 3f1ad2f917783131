// libFuzzer: config file parsing and validation (JSON with comments, layering, ranges, types).
// load_config promises never to throw: every bad file is one ConfigError naming a key.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <variant>

#include "common/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  usersd::ConfigSources sources;
  sources.file = "/proc/self/fd/" + std::to_string(fd);
  sources.resolve_secret = false;
  const auto loaded = usersd::load_config(sources);
  if (const auto* error = std::get_if<usersd::ConfigError>(&loaded)) {
    if (error->key.empty() || error->line().find('\n') != std::string::npos) std::abort();  // one line, names a key
  } else {
    static_cast<void>(usersd::config_to_redacted_json(std::get<usersd::Config>(loaded)).dump());
  }
  return 0;
}
