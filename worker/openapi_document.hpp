// The OpenAPI document compiled into the binary (generated from docs/openapi.json by cmake/embed_text.cmake).
#pragma once

#include <string_view>

namespace usersd::embedded {
std::string_view openapi_json();
}
