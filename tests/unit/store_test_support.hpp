// Helpers shared by the store tests: deterministic users, field-by-field comparison, and a way for
// worker threads to report failures (doctest assertions must stay on the test's own thread).
#pragma once

#include <doctest/doctest.h>

#include <cctype>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/user.hpp"

namespace usersd::testing {

// 24 hex digits: ObjectId-shaped, ordered like n.
inline std::string make_id(unsigned n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%024x", n);
  return buf;
}

inline std::string lowercase(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline User make_user(unsigned n) {
  User u;
  u.id = make_id(n);
  u.email = "User" + std::to_string(n) + "@Example.COM";
  u.email_normalized = lowercase(u.email);
  u.first_name = "First" + std::to_string(n);
  u.last_name = "Last" + std::to_string(n);
  u.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
  u.created_at_ms = 1'700'000'000'000 + n;
  u.updated_at_ms = u.created_at_ms;
  u.version = 1;
  return u;
}

inline void check_same_user(const User& got, const User& want) {
  CHECK(got.id == want.id);
  CHECK(got.email == want.email);
  CHECK(got.email_normalized == want.email_normalized);
  CHECK(got.first_name == want.first_name);
  CHECK(got.last_name == want.last_name);
  CHECK(got.phone == want.phone);
  CHECK(got.country == want.country);
  CHECK(got.state == want.state);
  CHECK(got.user_name == want.user_name);
  CHECK(got.role == want.role);
  CHECK(got.password_hash == want.password_hash);
  CHECK(got.created_at_ms == want.created_at_ms);
  CHECK(got.updated_at_ms == want.updated_at_ms);
  CHECK(got.version == want.version);
}

template <class T>
std::string message_of(const Result<T>& r) {
  return r.ok() ? std::string("ok") : r.error().message;
}

struct ThreadErrors {
  std::mutex mu;
  std::vector<std::string> messages;
  void add(const std::string& m) {
    std::lock_guard lock(mu);
    messages.push_back(m);
  }
};

}  // namespace usersd::testing
