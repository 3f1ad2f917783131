// The release this binary is. Defined in its own translation unit so a test build of "the next release"
// (usersd-next, see CMakeLists.txt) differs from usersd in one object file only.
#pragma once

namespace usersd {
const char* version();
}
