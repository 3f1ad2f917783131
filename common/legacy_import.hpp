// The Node.js service's data (Mongoose collections `authusers` and `users`) turned into usersd users:
// which records become which user, and why the others do not. Pure logic, no I/O: the source reader
// (legacy_source) fills the inputs and `usersd import-legacy` writes the plan.
//
// The rules (docs/migration.md repeats them for operators):
// - A record needs an ObjectId-shaped _id and a valid email; otherwise it is skipped as invalid.
// - Records of one collection with the same email ignoring case are duplicates: the oldest create_at wins,
//   then the smallest _id; the others are skipped and reported with the winner's id.
// - An account and a directory record with the same email become one user with the directory record's
//   _id (the id old links /v1/users/<id> use) and create_at, the record's profile and the account's
//   userName and password hash.
// - An account alone becomes a user with its own _id; names come from its userName (names_from_user_name),
//   else from the email's local part.
// - A directory record alone becomes a user with no password hash: it cannot log in until an admin sets one.
// - A field that breaks usersd's rules is left out and reported (a name is derived instead); a userName
//   already taken ignoring case by an earlier user (same order as duplicates) is left out and reported.
// - create_at missing: the ObjectId's timestamp. updatedAt = createdAt, version 1, role user.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/user.hpp"

namespace usersd {

// One document of `authusers` or `users`, as read. Absent or non-string fields are nullopt.
struct LegacyDocument {
  std::string raw_id;                  // for reports: the hex of an ObjectId, else the _id as JSON
  std::optional<std::string> id;       // 24 lowercase hex digits when the _id is ObjectId-shaped
  std::optional<std::string> email;
  std::optional<std::string> user_name;      // authusers
  std::optional<std::string> password_hash;  // authusers.hashPassword
  std::optional<std::string> first_name;     // users
  std::optional<std::string> last_name;
  std::optional<std::string> phone;
  std::optional<std::string> country;
  std::optional<std::string> state;
  std::optional<int64_t> created_at_ms;      // create_at when it is a Date
  std::vector<std::string> unreadable;       // fields present with a type the service never wrote
};

struct LegacyData {
  std::vector<LegacyDocument> accounts;   // authusers
  std::vector<LegacyDocument> directory;  // users
};

// One line of the report. `kind` is one of: invalid, duplicate, dropped-field, merged.
struct ImportNote {
  std::string kind;
  std::string collection;  // "authusers" or "users"
  std::string id;          // the record's raw id
  std::string detail;
};

struct ImportPlan {
  std::vector<User> users;         // ascending by id
  std::vector<ImportNote> notes;
  int64_t accounts_read = 0, directory_read = 0;
  int64_t invalid = 0, duplicates = 0, merged = 0;
  int64_t accounts_only = 0, directory_only = 0;
  int64_t without_password = 0;    // users that cannot log in until an admin sets a password
};

ImportPlan plan_legacy_import(const LegacyData& data);

// Whether every stored field of a and b is equal (what "re-running the import changes nothing" compares).
bool same_user(const User& a, const User& b);

}  // namespace usersd
