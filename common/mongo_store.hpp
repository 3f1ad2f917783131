// MongoDB store for fleets: many usersd hosts sharing one replica set (or anything speaking its wire
// protocol), through mongo-c-driver's thread-safe client pool.
#pragma once

#include <memory>
#include <string>

#include "common/user_store.hpp"

namespace usersd {

struct MongoOptions {
  std::string url;                       // mongodb://... or mongodb+srv://...; the path names the database
  int pool_size = 8;                     // pooled clients (one per concurrent request)
  // Applied only when the URL does not set serverSelectionTimeoutMS / connectTimeoutMS / socketTimeoutMS.
  int server_selection_timeout_ms = 2000;
  int connect_timeout_ms = 2000;
  int socket_timeout_ms = 5000;
};

// Initialises mongo-c-driver once per process, its log routed into spdlog. For other users of the driver
// (the import-legacy reader); open_mongo_store calls it itself.
void init_mongo_driver();

// Connects, and creates the unique indexes (emailNormalized; userNameNormalized, sparse) if missing.
// Errc::unavailable with the reason (password redacted) when the URL is invalid or the server cannot
// be reached within the server selection timeout.
Result<std::unique_ptr<UserStore>> open_mongo_store(const MongoOptions& options);

}  // namespace usersd
