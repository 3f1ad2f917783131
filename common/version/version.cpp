#include "common/version.hpp"

namespace usersd {
const char* version() { return USERSD_VERSION; }
}  // namespace usersd
