// Embedded default store: one SQLite file in WAL mode, shared safely by many threads and processes.
#pragma once

#include <memory>
#include <string>

#include "common/user_store.hpp"

namespace usersd {

struct SqliteOptions {
  std::string path;                 // database file; parent directory must exist
  int busy_timeout_ms = 5000;       // wait this long for another process's write lock
  int pool_size = 8;                // connections kept open (one per concurrent request)
};

// Opens (creating if needed) and migrates the schema to the latest version.
// Errc::unavailable with the reason when the file cannot be opened or migrated.
Result<std::unique_ptr<UserStore>> open_sqlite_store(const SqliteOptions& options);

}  // namespace usersd
