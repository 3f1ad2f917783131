// Errors at boundaries are values: Result<T> holds either a value or an Error the caller must inspect.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace usersd {

enum class Errc {
  not_found,            // no such record
  conflict,             // unique constraint (email) violated
  precondition_failed,  // optimistic concurrency: version changed since read
  unavailable,          // store unreachable, locked too long, or I/O failure
  invalid,              // bad input that reached a lower layer (e.g. corrupt cursor)
};

struct Error {
  Errc code;
  std::string message;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit on purpose
  Result(Error error) : v_(std::move(error)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Unit {};
using Status = Result<Unit>;
inline Status ok_status() { return Unit{}; }

}  // namespace usersd
