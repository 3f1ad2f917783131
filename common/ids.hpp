// Identifiers for new records: ObjectId-shaped (4-byte time, 5 random bytes per process, 3-byte counter),
// so ids sort by creation time and stay compatible with MongoDB's _id.
#pragma once

#include <string>
#include <string_view>

namespace usersd {

std::string new_object_id();
bool is_object_id(std::string_view text);

}  // namespace usersd
