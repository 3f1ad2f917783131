// Reads the Node.js service's MongoDB collections (`authusers`, `users`) for `usersd import-legacy`.
#pragma once

#include <string>

#include "common/legacy_import.hpp"
#include "common/result.hpp"

namespace usersd {

// `url` must name the service's database in its path (mongodb://host/mydb). Every document is read,
// in _id order; fields of an unexpected type are listed in LegacyDocument::unreadable, never fatal.
Result<LegacyData> read_legacy_data(const std::string& url);

// The database a MongoDB URL names in its path, or "" when it names none.
std::string mongo_url_database(const std::string& url);

}  // namespace usersd
