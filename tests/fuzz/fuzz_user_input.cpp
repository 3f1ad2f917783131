// libFuzzer: a request body as the API reads it (size, NUL, nesting, JSON), then user validation for
// every operation, and the validated user back to JSON. Any crash, sanitizer report or broken
// invariant (abort) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/user_input.hpp"
#include "worker/request_body.hpp"
#include "worker/user_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  httplib::Response res;
  const auto json = usersd::parse_json_body(body, res);
  if (!json) {
    if (res.status != 400) std::abort();  // a refused body is always a 400
    return 0;
  }
  using usersd::UserOperation;
  for (auto op : {UserOperation::register_self, UserOperation::create, UserOperation::replace, UserOperation::patch}) {
    for (bool admin : {false, true}) {
      usersd::UserInput input;
      const auto errors = usersd::parse_user_input(*json, op, admin, {8, 128}, input);
      if (!errors.empty()) continue;
      if (input.password && (usersd::utf8_length(*input.password) < 8 || usersd::utf8_length(*input.password) > 128)) {
        std::abort();  // validation let a password outside its bounds through
      }
      if (input.role && !admin) std::abort();  // only admins may set roles
      usersd::User user;
      usersd::apply_user_input(input, op, user);
      if (input.email && !usersd::is_valid_email(user.email)) std::abort();
      static_cast<void>(usersd::user_to_json(user).dump());
    }
  }
  return 0;
}
