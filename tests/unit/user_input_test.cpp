#include <doctest/doctest.h>

#include "common/user_input.hpp"

using namespace usersd;
using json = nlohmann::json;

namespace {

json valid_registration() {
  return {{"email", "Ann.Lee@Example.com"}, {"password", "correct horse"}, {"firstName", "Ann"}, {"lastName", "Lee"}};
}

FieldErrors check(const json& body, UserOperation op, bool admin = false) {
  UserInput in;
  return parse_user_input(body, op, admin, {}, in);
}

bool has_error_for(const FieldErrors& errors, const std::string& field) {
  for (const auto& e : errors) {
    if (e.field == field) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("email validation follows the WHATWG form rules") {
  CHECK(is_valid_email("a@b.co"));
  CHECK(is_valid_email("first.last+tag@sub.example.com"));
  CHECK(is_valid_email("user@localhost"));
  CHECK_FALSE(is_valid_email("no-at-sign"));
  CHECK_FALSE(is_valid_email("a@@b.co"));
  CHECK_FALSE(is_valid_email("@b.co"));
  CHECK_FALSE(is_valid_email("a@"));
  CHECK_FALSE(is_valid_email("a b@c.com"));
  CHECK_FALSE(is_valid_email("a@-b.com"));
  CHECK_FALSE(is_valid_email("a@b..com"));
  CHECK_FALSE(is_valid_email(std::string(65, 'a') + "@b.com"));
  CHECK_FALSE(is_valid_email("a@" + std::string(250, 'b') + ".com"));
  CHECK(normalize_email("Ann@Example.COM") == "ann@example.com");
}

TEST_CASE("registration accepts a complete body and fills the input") {
  UserInput in;
  auto body = valid_registration();
  body["phone"] = "+1 (555) 010-9999";
  body["country"] = nullptr;
  REQUIRE(parse_user_input(body, UserOperation::register_self, false, {}, in).empty());
  CHECK(*in.email == "Ann.Lee@Example.com");
  CHECK(*in.password == "correct horse");
  CHECK(in.phone.has_value());
  CHECK(in.country.has_value());
  CHECK_FALSE(in.country->has_value());  // explicit null
  CHECK_FALSE(in.state.has_value());     // absent
}

TEST_CASE("every invalid field is reported, not just the first") {
  json body = {{"email", "nope"}, {"password", "short"}, {"firstName", ""}, {"lastName", 7}};
  const auto errors = check(body, UserOperation::register_self);
  CHECK(errors.size() == 4);
  for (const char* f : {"email", "password", "firstName", "lastName"}) CHECK(has_error_for(errors, f));
}

TEST_CASE("required fields, lengths and types") {
  auto body = valid_registration();
  body.erase("lastName");
  CHECK(has_error_for(check(body, UserOperation::register_self), "lastName"));

  body = valid_registration();
  body["password"] = std::string(7, 'x');
  CHECK(has_error_for(check(body, UserOperation::register_self), "password"));
  body["password"] = std::string(8, 'x');
  CHECK(check(body, UserOperation::register_self).empty());
  body["password"] = std::string(128, 'x');
  CHECK(check(body, UserOperation::register_self).empty());
  body["password"] = std::string(129, 'x');
  CHECK(has_error_for(check(body, UserOperation::register_self), "password"));

  body = valid_registration();
  body["firstName"] = std::string(100, 'x');
  CHECK(check(body, UserOperation::register_self).empty());
  body["firstName"] = std::string(101, 'x');
  CHECK(has_error_for(check(body, UserOperation::register_self), "firstName"));
  body["firstName"] = "   ";
  CHECK(has_error_for(check(body, UserOperation::register_self), "firstName"));
  body["firstName"] = "Tab\there";
  CHECK(has_error_for(check(body, UserOperation::register_self), "firstName"));
  // 100 characters of 2-byte UTF-8 are 100 characters, not 200.
  std::string accented;
  for (int i = 0; i < 100; ++i) accented += "\xc3\xa9";
  body["firstName"] = accented;
  CHECK(check(body, UserOperation::register_self).empty());

  for (const json& bad : {json(1), json(true), json::array(), json::object()}) {
    body = valid_registration();
    body["email"] = bad;
    CHECK(has_error_for(check(body, UserOperation::register_self), "email"));
  }
  body = valid_registration();
  body["phone"] = "call me";
  CHECK(has_error_for(check(body, UserOperation::register_self), "phone"));
  body["phone"] = nullptr;
  CHECK(check(body, UserOperation::register_self).empty());
  body["firstName"] = nullptr;
  CHECK(has_error_for(check(body, UserOperation::register_self), "firstName"));
}

TEST_CASE("read-only, unknown and operator keys are rejected") {
  for (const char* key : {"id", "createdAt", "updatedAt", "passwordHash", "_links", "$where", "$ne", "nickname"}) {
    auto body = valid_registration();
    body[key] = "x";
    CHECK_MESSAGE(has_error_for(check(body, UserOperation::register_self), key), key);
  }
  CHECK(check(json::array(), UserOperation::register_self).size() == 1);
  CHECK(check(json("text"), UserOperation::patch).size() == 1);
}

TEST_CASE("roles: never at registration, only admins elsewhere") {
  auto body = valid_registration();
  body["role"] = "admin";
  CHECK(has_error_for(check(body, UserOperation::register_self, true), "role"));
  CHECK(check(body, UserOperation::create, true).empty());
  CHECK(has_error_for(check({{"role", "admin"}}, UserOperation::patch, false), "role"));
  CHECK(check({{"role", "admin"}}, UserOperation::patch, true).empty());
  CHECK(has_error_for(check({{"role", "root"}}, UserOperation::patch, true), "role"));
}

TEST_CASE("passwords are not accepted on replace or patch") {
  CHECK(has_error_for(check({{"password", "new password!"}}, UserOperation::patch, true), "password"));
}

TEST_CASE("replace clears absent optional fields; patch keeps them; null clears") {
  User user;
  user.phone = "123";
  user.country = "NZ";
  user.state = "Otago";

  UserInput patch_in;
  REQUIRE(parse_user_input({{"country", nullptr}, {"lastName", "Ngata"}}, UserOperation::patch, false, {}, patch_in).empty());
  User patched = user;
  apply_user_input(patch_in, UserOperation::patch, patched);
  CHECK(patched.phone == "123");
  CHECK_FALSE(patched.country.has_value());
  CHECK(patched.state == "Otago");
  CHECK(patched.last_name == "Ngata");

  UserInput put_in;
  REQUIRE(parse_user_input({{"email", "A@B.co"}, {"firstName", "A"}, {"lastName", "B"}, {"state", "Canterbury"}},
                           UserOperation::replace, false, {}, put_in)
              .empty());
  User replaced = user;
  apply_user_input(put_in, UserOperation::replace, replaced);
  CHECK_FALSE(replaced.phone.has_value());
  CHECK_FALSE(replaced.country.has_value());
  CHECK(replaced.state == "Canterbury");
  CHECK(replaced.email_normalized == "a@b.co");
}

TEST_CASE("userName: 1 to 64 characters of A-Z a-z 0-9 . _ - @ +, compared ignoring ASCII case") {
  CHECK(is_valid_user_name("ada"));
  CHECK(is_valid_user_name("Ada.Lovelace_1815-x@y+z"));
  CHECK(is_valid_user_name(std::string(64, 'a')));
  CHECK_FALSE(is_valid_user_name(""));
  CHECK_FALSE(is_valid_user_name(std::string(65, 'a')));
  CHECK_FALSE(is_valid_user_name("ada lovelace"));
  CHECK_FALSE(is_valid_user_name("zoë"));
  CHECK_FALSE(is_valid_user_name("a$b"));
  CHECK(normalize_user_name("Ada.LOVELACE") == "ada.lovelace");
  CHECK(has_error_for(check({{"userName", "no spaces"}}, UserOperation::patch), "userName"));
  CHECK(has_error_for(check({{"userName", 7}}, UserOperation::patch), "userName"));
  CHECK(check({{"userName", nullptr}}, UserOperation::patch).empty());  // clears it
}

TEST_CASE("names from a userName split at the first separator with text on both sides") {
  CHECK(names_from_user_name("ada.lovelace") == std::pair<std::string, std::string>{"ada", "lovelace"});
  CHECK(names_from_user_name("grace_brewster_hopper") == std::pair<std::string, std::string>{"grace", "brewster_hopper"});
  CHECK(names_from_user_name("linus") == std::pair<std::string, std::string>{"linus", "linus"});
  CHECK(names_from_user_name(".hidden") == std::pair<std::string, std::string>{".hidden", ".hidden"});
  CHECK(names_from_user_name("trailing.") == std::pair<std::string, std::string>{"trailing.", "trailing."});
  CHECK(names_from_user_name(std::string(150, 'x')).first.size() == 100);
}

TEST_CASE("registration with the Node.js service's body {userName, email, password}") {
  const json old_body = {{"userName", "ada.lovelace"}, {"email", "ada@example.com"}, {"password", "correct horse"}};
  UserInput in;
  REQUIRE(parse_user_input(old_body, UserOperation::register_self, false, {}, in).empty());
  User user;
  apply_user_input(in, UserOperation::register_self, user);
  CHECK(user.user_name == "ada.lovelace");
  CHECK(user.first_name == "ada");
  CHECK(user.last_name == "lovelace");

  // Names given win over derived ones; a missing one is still derived.
  json with_first = old_body;
  with_first["firstName"] = "Augusta";
  UserInput in2;
  REQUIRE(parse_user_input(with_first, UserOperation::register_self, false, {}, in2).empty());
  User user2;
  apply_user_input(in2, UserOperation::register_self, user2);
  CHECK(user2.first_name == "Augusta");
  CHECK(user2.last_name == "lovelace");

  // Without a userName both names stay required; a null userName is no userName.
  json no_name = old_body;
  no_name.erase("userName");
  CHECK(has_error_for(check(no_name, UserOperation::register_self), "firstName"));
  CHECK(has_error_for(check(no_name, UserOperation::register_self), "lastName"));
  no_name["userName"] = nullptr;
  CHECK(has_error_for(check(no_name, UserOperation::register_self), "firstName"));
  // Admin creation keeps requiring names.
  json admin_body = old_body;
  CHECK(has_error_for(check(admin_body, UserOperation::create, true), "firstName"));
}
