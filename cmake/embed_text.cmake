# Writes OUTPUT, a C++ file defining usersd::embedded::openapi_json() returning INPUT's text.
file(READ ${INPUT} content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
file(WRITE ${OUTPUT} "// Generated from docs/openapi.json by cmake/embed_text.cmake. Do not edit.\n"
  "#include <string_view>\n"
  "namespace usersd::embedded {\n"
  "static const char kOpenApiJson[] = {${bytes} 0x00};\n"
  "std::string_view openapi_json() { return {kOpenApiJson, sizeof(kOpenApiJson) - 1}; }\n"
  "}\n")
