#include "common/store_factory.hpp"

#include <algorithm>

#include "common/mongo_store.hpp"
#include "common/sqlite_store.hpp"

namespace usersd {
namespace {

// Each open SQLite connection costs ~110 KiB (schema, statement cache); 32 of them (one per HTTP thread)
// were 3 MiB of an idle worker's 5 MiB private memory. A statement holds its connection for tens of
// microseconds and a worker runs on a few cores, so 8 are never all busy in practice; a request that
// finds them busy waits on the pool, not on SQLite (measured by make bench, docs/performance.md).
constexpr int kMaxSqliteConnections = 8;

}  // namespace

Result<std::unique_ptr<UserStore>> open_store(const StorageConfig& storage, int concurrency) {
  if (storage.url.rfind("sqlite://", 0) == 0) {
    SqliteOptions options;
    options.path = storage.url.substr(9);
    options.busy_timeout_ms = storage.busy_timeout_ms;
    options.pool_size = std::min(concurrency, kMaxSqliteConnections);
    return open_sqlite_store(options);
  }
  if (storage.url.rfind("mongodb://", 0) == 0 || storage.url.rfind("mongodb+srv://", 0) == 0) {
    MongoOptions options;
    options.url = storage.url;
    options.pool_size = concurrency;  // one pooled client per thread that may use the store at once
    options.server_selection_timeout_ms = storage.server_selection_timeout_ms;
    options.connect_timeout_ms = storage.connect_timeout_ms;
    options.socket_timeout_ms = storage.socket_timeout_ms;
    return open_mongo_store(options);
  }
  return Error{Errc::unavailable, "storage.url: unsupported scheme in " + redact_url(storage.url) +
                                      "; use sqlite://, mongodb:// or mongodb+srv://"};
}

}  // namespace usersd
