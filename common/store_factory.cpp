#include "common/store_factory.hpp"

#include "common/sqlite_store.hpp"

namespace usersd {

Result<std::unique_ptr<UserStore>> open_store(const StorageConfig& storage, int concurrency) {
  if (storage.url.rfind("sqlite://", 0) == 0) {
    SqliteOptions options;
    options.path = storage.url.substr(9);
    options.busy_timeout_ms = storage.busy_timeout_ms;
    options.pool_size = concurrency;
    return open_sqlite_store(options);
  }
  return Error{Errc::unavailable, "storage.url: the MongoDB store is not part of this build yet; use sqlite://"};
}

}  // namespace usersd
