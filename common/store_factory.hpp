// Chooses the UserStore implementation from the storage URL's scheme.
#pragma once

#include <memory>

#include "common/config.hpp"
#include "common/user_store.hpp"

namespace usersd {

// `concurrency`: how many threads will use the store at once (sizes connection pools).
Result<std::unique_ptr<UserStore>> open_store(const StorageConfig& storage, int concurrency);

}  // namespace usersd
