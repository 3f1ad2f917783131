// The import-legacy rules on hand-made legacy documents: merging, duplicates, invalid records, derived names.
#include "common/legacy_import.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace usersd;

namespace {

constexpr const char* kHash = "$2b$10$abcdefghijklmnopqrstuu5Lx0bqFV8Dw0o1sUVZbdjFPBqAJ5Fiy";  // well-formed

LegacyDocument account(const std::string& id, const std::string& email, const std::string& user_name, int64_t created) {
  LegacyDocument d;
  d.raw_id = id;
  d.id = id;
  d.email = email;
  d.user_name = user_name;
  d.password_hash = kHash;
  d.created_at_ms = created;
  return d;
}

LegacyDocument record(const std::string& id, const std::string& email, const std::string& first, const std::string& last,
                      int64_t created) {
  LegacyDocument d;
  d.raw_id = id;
  d.id = id;
  d.email = email;
  d.first_name = first;
  d.last_name = last;
  d.created_at_ms = created;
  return d;
}

const User* by_id(const ImportPlan& plan, const std::string& id) {
  auto it = std::find_if(plan.users.begin(), plan.users.end(), [&](const User& u) { return u.id == id; });
  return it == plan.users.end() ? nullptr : &*it;
}

size_t notes_about(const ImportPlan& plan, const std::string& kind, const std::string& id) {
  return static_cast<size_t>(std::count_if(plan.notes.begin(), plan.notes.end(),
                                           [&](const ImportNote& n) { return n.kind == kind && n.id == id; }));
}

}  // namespace

TEST_CASE("legacy import: account + record merge under the record's id; loners become users") {
  LegacyData data;
  data.accounts.push_back(account("5f0000000000000000000001", "Ada@Example.com", "ada.lovelace", 1000));
  data.accounts.push_back(account("5f0000000000000000000002", "solo@example.com", "grace_hopper", 2000));
  data.directory.push_back(record("5f00000000000000000000a1", "ada@EXAMPLE.com", "Ada", "Lovelace", 1500));
  data.directory.push_back(record("5f00000000000000000000a2", "dir@example.com", "Dir", "Only", 2500));
  const ImportPlan plan = plan_legacy_import(data);
  CHECK(plan.users.size() == 3);
  CHECK(plan.merged == 1);
  CHECK(plan.accounts_only == 1);
  CHECK(plan.directory_only == 1);
  CHECK(plan.without_password == 1);

  const User* ada = by_id(plan, "5f00000000000000000000a1");
  REQUIRE(ada != nullptr);
  CHECK(ada->email == "ada@EXAMPLE.com");
  CHECK(ada->email_normalized == "ada@example.com");
  CHECK(ada->first_name == "Ada");
  CHECK(ada->user_name == "ada.lovelace");
  CHECK(ada->password_hash == kHash);
  CHECK(ada->created_at_ms == 1500);
  CHECK(ada->updated_at_ms == 1500);
  CHECK(ada->version == 1);
  CHECK(by_id(plan, "5f0000000000000000000001") == nullptr);

  const User* solo = by_id(plan, "5f0000000000000000000002");
  REQUIRE(solo != nullptr);
  CHECK(solo->first_name == "grace");
  CHECK(solo->last_name == "hopper");
  CHECK(solo->password_hash == kHash);

  const User* dir = by_id(plan, "5f00000000000000000000a2");
  REQUIRE(dir != nullptr);
  CHECK(dir->password_hash.empty());
  CHECK_FALSE(dir->user_name.has_value());
}

TEST_CASE("legacy import: duplicates by email ignoring case keep the oldest, then the smallest id, and are reported") {
  LegacyData data;
  data.directory.push_back(record("5f00000000000000000000b3", "dup@example.com", "C", "Third", 3000));
  data.directory.push_back(record("5f00000000000000000000b2", "DUP@example.com", "B", "Second", 1000));
  data.directory.push_back(record("5f00000000000000000000b1", "Dup@Example.com", "A", "First", 1000));
  const ImportPlan plan = plan_legacy_import(data);
  REQUIRE(plan.users.size() == 1);
  CHECK(plan.users[0].id == "5f00000000000000000000b1");
  CHECK(plan.duplicates == 2);
  CHECK(notes_about(plan, "duplicate", "5f00000000000000000000b2") == 1);
  CHECK(notes_about(plan, "duplicate", "5f00000000000000000000b3") == 1);
  // Deterministic: the same input in another order gives the same plan.
  std::reverse(data.directory.begin(), data.directory.end());
  const ImportPlan again = plan_legacy_import(data);
  REQUIRE(again.users.size() == 1);
  CHECK(same_user(again.users[0], plan.users[0]));
}

TEST_CASE("legacy import: invalid records are skipped and reported, bad fields dropped and reported") {
  LegacyData data;
  LegacyDocument no_oid = record("x", "a@example.com", "A", "B", 1);
  no_oid.raw_id = "\"not-an-id\"";
  no_oid.id.reset();
  data.directory.push_back(no_oid);
  data.directory.push_back(record("5f00000000000000000000c1", "not an email", "A", "B", 1));
  LegacyDocument no_email = record("5f00000000000000000000c2", "", "A", "B", 1);
  no_email.email.reset();
  data.directory.push_back(no_email);
  LegacyDocument bad_fields = record("5f00000000000000000000c3", " spaced@example.com ", "", "Lee", 1);
  bad_fields.phone = "call me";
  bad_fields.created_at_ms.reset();  // falls back to the ObjectId's time
  data.directory.push_back(bad_fields);
  LegacyDocument odd_account = account("5f00000000000000000000c4", "odd@example.com", "has space", 5);
  odd_account.password_hash = "plaintext";
  data.accounts.push_back(odd_account);
  data.accounts.push_back(account("5f00000000000000000000c5", "twin@example.com", "HAS.NAME", 9));
  data.accounts.push_back(account("5f00000000000000000000c6", "older@example.com", "has.name", 8));

  const ImportPlan plan = plan_legacy_import(data);
  CHECK(plan.invalid == 3);
  CHECK(notes_about(plan, "invalid", "\"not-an-id\"") == 1);
  CHECK(notes_about(plan, "invalid", "5f00000000000000000000c1") == 1);
  CHECK(notes_about(plan, "invalid", "5f00000000000000000000c2") == 1);

  const User* spaced = by_id(plan, "5f00000000000000000000c3");
  REQUIRE(spaced != nullptr);
  CHECK(spaced->email == "spaced@example.com");
  CHECK(spaced->first_name == "spaced");  // no userName: the email's local part
  CHECK_FALSE(spaced->phone.has_value());
  CHECK(spaced->created_at_ms == int64_t{0x5f000000} * 1000);
  CHECK(notes_about(plan, "dropped-field", "5f00000000000000000000c3") == 2);  // firstName, phone

  const User* odd = by_id(plan, "5f00000000000000000000c4");
  REQUIRE(odd != nullptr);
  CHECK_FALSE(odd->user_name.has_value());
  CHECK(odd->password_hash.empty());
  CHECK(odd->first_name == "has");  // names still come from the raw userName
  CHECK(odd->last_name == "space");

  // A userName shared ignoring case: the older account keeps it.
  CHECK(by_id(plan, "5f00000000000000000000c6")->user_name == "has.name");
  CHECK_FALSE(by_id(plan, "5f00000000000000000000c5")->user_name.has_value());
  CHECK(notes_about(plan, "dropped-field", "5f00000000000000000000c5") == 1);
}
