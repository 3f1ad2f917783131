// Writing JSON text by hand where building a json object per line would cost too much (log lines).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace usersd {

// Appends `text` as a JSON string literal (with quotes). Invalid UTF-8 becomes U+FFFD, so a hostile
// path or header can never break the line's JSON.
void append_json_string(std::string& out, std::string_view text);

// `"key":value` members of one JSON object, without the braces, in the order they are added.
class JsonFields {
 public:
  JsonFields& add(std::string_view key, std::string_view value);
  JsonFields& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  JsonFields& add(std::string_view key, int64_t value);
  JsonFields& add(std::string_view key, int value) { return add(key, static_cast<int64_t>(value)); }
  JsonFields& add(std::string_view key, uint64_t value);
  JsonFields& add(std::string_view key, double value);  // 3 decimals
  JsonFields& add(std::string_view key, bool value);
  JsonFields& add_null(std::string_view key);
  const std::string& text() const { return text_; }
  bool empty() const { return text_.empty(); }

 private:
  void key(std::string_view name);
  std::string text_;
};

}  // namespace usersd
