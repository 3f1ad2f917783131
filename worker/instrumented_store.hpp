// A UserStore that times every call of the store it wraps and counts the calls that found it unavailable.
#pragma once

#include <memory>

#include "common/user_store.hpp"
#include "worker/worker_metrics.hpp"

namespace usersd {

std::unique_ptr<UserStore> instrument_store(std::unique_ptr<UserStore> store, WorkerMetrics& metrics);

}  // namespace usersd
