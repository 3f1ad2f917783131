#include "common/user_input.hpp"

#include <algorithm>
#include <cctype>

namespace usersd {
namespace {

using json = nlohmann::json;

constexpr size_t kNameMax = 100;
constexpr size_t kPlaceMax = 100;
constexpr size_t kPhoneMax = 32;
constexpr size_t kEmailMax = 254;

struct FieldRule {
  const char* name;
  bool required;    // must be present (and non-null)
  bool nullable;    // null allowed (clears the field)
};

// Which JSON keys each operation accepts. Anything else (id, createdAt, passwordHash, $-keys...) is rejected.
std::vector<FieldRule> rules_for(UserOperation op, bool caller_is_admin, bool body_has_user_name) {
  const bool full = op != UserOperation::patch;
  std::vector<FieldRule> rules = {
      {"email", full, false},    {"firstName", full, false}, {"lastName", full, false},
      {"phone", false, true},    {"country", false, true},   {"state", false, true},
      {"userName", false, true},
  };
  // The Node.js service's clients register with {userName, email, password}: the names then come from
  // the userName (see apply_user_input), so they are required only when there is no userName.
  if (op == UserOperation::register_self && body_has_user_name) {
    for (auto& rule : rules) {
      if (std::string_view(rule.name) == "firstName" || std::string_view(rule.name) == "lastName") rule.required = false;
    }
  }
  if (op == UserOperation::register_self || op == UserOperation::create) rules.push_back({"password", true, false});
  if (op != UserOperation::register_self && caller_is_admin) rules.push_back({"role", false, false});
  return rules;
}

bool has_control_chars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
}

std::optional<std::string> check_text(std::string_view value, size_t max_len) {
  const size_t len = utf8_length(value);
  if (len == 0 || is_blank(value)) return "must not be empty";
  if (len > max_len) return "must be at most " + std::to_string(max_len) + " characters";
  if (has_control_chars(value)) return "must not contain control characters";
  return std::nullopt;
}

std::optional<std::string> check_phone(std::string_view value) {
  if (value.empty() || value.size() > kPhoneMax) return "must be 1 to 32 characters";
  bool digit = false;
  for (char c : value) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digit = true;
    } else if (std::string_view("+()./ -").find(c) == std::string_view::npos) {
      return "may contain only digits, spaces and + ( ) . / -";
    }
  }
  if (!digit) return "must contain a digit";
  return std::nullopt;
}

std::optional<std::string> check_field(const std::string& name, const std::string& value, PasswordLengths pw) {
  if (name == "email") {
    if (!is_valid_email(value)) return "must be a valid email address";
    return std::nullopt;
  }
  if (name == "password") {
    const size_t len = utf8_length(value);
    if (len < pw.min || len > pw.max) {
      return "must be " + std::to_string(pw.min) + " to " + std::to_string(pw.max) + " characters";
    }
    return std::nullopt;
  }
  if (name == "firstName" || name == "lastName") return check_text(value, kNameMax);
  if (name == "phone") return check_phone(value);
  if (name == "userName") {
    if (!is_valid_user_name(value)) return "must be 1 to 64 characters of A-Z a-z 0-9 . _ - @ +";
    return std::nullopt;
  }
  if (name == "country" || name == "state") return check_text(value, kPlaceMax);
  if (name == "role") {
    if (!parse_role(value)) return "must be \"user\" or \"admin\"";
    return std::nullopt;
  }
  return "unknown field";
}

void store_field(UserInput& out, const std::string& name, std::optional<std::string> value) {
  if (name == "email") out.email = std::move(value);
  else if (name == "password") out.password = std::move(value);
  else if (name == "firstName") out.first_name = std::move(value);
  else if (name == "lastName") out.last_name = std::move(value);
  else if (name == "phone") out.phone = std::move(value);
  else if (name == "country") out.country = std::move(value);
  else if (name == "state") out.state = std::move(value);
  else if (name == "userName") out.user_name = std::move(value);
  else if (name == "role" && value) out.role = parse_role(*value);
}

std::string unknown_field_message(const std::string& key, UserOperation op) {
  if (key == "role") return op == UserOperation::register_self ? "cannot be chosen at registration" : "only admins can change roles";
  if (key == "password") return "cannot be changed here";
  if (key == "id" || key == "createdAt" || key == "updatedAt" || key == "passwordHash" || key == "_links") {
    return "is read-only";
  }
  return "is not a known field";
}

bool ascii_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

bool valid_domain(std::string_view domain) {
  if (domain.empty() || domain.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = domain.find('.', start);
    const std::string_view label = domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || !ascii_alnum(label.front()) || !ascii_alnum(label.back())) return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return ascii_alnum(c) || c == '-'; })) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

size_t utf8_length(std::string_view text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

// The WHATWG (HTML form) definition: what browsers accept, and what users expect to be accepted.
bool is_valid_email(std::string_view email) {
  if (email.size() < 3 || email.size() > kEmailMax) return false;
  const size_t at = email.find('@');
  if (at == std::string_view::npos || at == 0 || at > 64 || email.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  static constexpr std::string_view kLocalSpecials = ".!#$%&'*+/=?^_`{|}~-";
  const std::string_view local = email.substr(0, at);
  if (!std::all_of(local.begin(), local.end(),
                   [](char c) { return ascii_alnum(c) || kLocalSpecials.find(c) != std::string_view::npos; })) {
    return false;
  }
  return valid_domain(email.substr(at + 1));
}

bool is_valid_user_name(std::string_view user_name) {
  if (user_name.empty() || user_name.size() > kUserNameMax) return false;
  return std::all_of(user_name.begin(), user_name.end(),
                     [](char c) { return ascii_alnum(c) || std::string_view("._-@+").find(c) != std::string_view::npos; });
}

std::string normalize_user_name(std::string_view user_name) { return normalize_email(user_name); }

std::pair<std::string, std::string> names_from_user_name(std::string_view user_name) {
  auto cut = [](std::string_view text) {
    // At most kNameMax code points, never splitting a UTF-8 sequence.
    size_t points = 0, end = 0;
    while (end < text.size() && points < kNameMax) {
      ++end;
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
      ++points;
    }
    return std::string(text.substr(0, end));
  };
  const size_t split = user_name.find_first_of("._-@+ ");
  if (split != std::string_view::npos && split > 0 && split + 1 < user_name.size()) {
    return {cut(user_name.substr(0, split)), cut(user_name.substr(split + 1))};
  }
  return {cut(user_name), cut(user_name)};
}

std::string normalize_email(std::string_view email) {
  std::string out(email);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  return out;
}

FieldErrors parse_user_input(const json& body, UserOperation op, bool caller_is_admin, PasswordLengths pw,
                             UserInput& out) {
  FieldErrors errors;
  if (!body.is_object()) return {{"", "the request body must be a JSON object"}};
  const auto user_name = body.find("userName");
  const auto rules = rules_for(op, caller_is_admin, user_name != body.end() && user_name->is_string());
  for (const auto& [key, value] : body.items()) {
    const auto rule = std::find_if(rules.begin(), rules.end(), [&](const FieldRule& r) { return key == r.name; });
    if (rule == rules.end()) {
      errors.push_back({key, unknown_field_message(key, op)});
      continue;
    }
    if (value.is_null()) {
      if (rule->nullable) {
        store_field(out, key, std::nullopt);
      } else {
        errors.push_back({key, "must not be null"});
      }
      continue;
    }
    if (!value.is_string()) {
      errors.push_back({key, "must be a string"});
      continue;
    }
    const std::string& text = value.get_ref<const std::string&>();
    if (auto problem = check_field(key, text, pw)) {
      errors.push_back({key, *problem});
      continue;
    }
    store_field(out, key, text);
  }
  for (const auto& rule : rules) {
    if (rule.required && !body.contains(rule.name)) errors.push_back({rule.name, "is required"});
  }
  return errors;
}

void apply_user_input(const UserInput& in, UserOperation op, User& user) {
  if (in.email) {
    user.email = *in.email;
    user.email_normalized = normalize_email(*in.email);
  }
  if (in.first_name) user.first_name = *in.first_name;
  if (in.last_name) user.last_name = *in.last_name;
  const bool clear_absent = op != UserOperation::patch;
  auto apply_optional = [clear_absent](const OptionalField& field, std::optional<std::string>& target) {
    if (field) {
      target = *field;
    } else if (clear_absent) {
      target.reset();
    }
  };
  apply_optional(in.phone, user.phone);
  apply_optional(in.country, user.country);
  apply_optional(in.state, user.state);
  apply_optional(in.user_name, user.user_name);
  if (in.role) user.role = *in.role;
  if (op == UserOperation::register_self && in.user_name && *in.user_name && (!in.first_name || !in.last_name)) {
    auto [first, last] = names_from_user_name(**in.user_name);
    if (!in.first_name) user.first_name = std::move(first);
    if (!in.last_name) user.last_name = std::move(last);
  }
}

}  // namespace usersd
