// See legacy_import.hpp for the rules; this file applies them in that order.
#include "common/legacy_import.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/legacy_bcrypt.hpp"
#include "common/user_input.hpp"

namespace usersd {
namespace {

constexpr const char* kAccounts = "authusers";
constexpr const char* kDirectory = "users";

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

// Seconds in the ObjectId's first 4 bytes, as milliseconds.
int64_t object_id_time_ms(const std::string& id) { return static_cast<int64_t>(std::stoul(id.substr(0, 8), nullptr, 16)) * 1000; }

int64_t created_of(const LegacyDocument& doc) { return doc.created_at_ms ? *doc.created_at_ms : object_id_time_ms(*doc.id); }

// Whether `value` passes the API's rule for `field` (the same rules a client's request meets).
bool valid_field(const char* field, const std::string& value) {
  UserInput ignored;
  return parse_user_input(nlohmann::json{{field, value}}, UserOperation::patch, false, {}, ignored).empty();
}

// A valid record of one collection, keyed by its normalized email.
struct Entry {
  const LegacyDocument* doc;
  std::string email;  // trimmed
  int64_t created_ms;
};

bool older(const Entry& a, const Entry& b) {
  return std::tie(a.created_ms, *a.doc->id) < std::tie(b.created_ms, *b.doc->id);
}

// Validates the documents of one collection and keeps, per email, the oldest (then smallest id).
std::map<std::string, Entry> winners_by_email(const std::vector<LegacyDocument>& docs, const char* collection,
                                              ImportPlan& plan) {
  std::map<std::string, std::vector<Entry>> groups;
  for (const auto& doc : docs) {
    if (!doc.id) {
      plan.notes.push_back({"invalid", collection, doc.raw_id, "_id is not an ObjectId; skipped"});
      ++plan.invalid;
      continue;
    }
    const std::string email = doc.email ? trim(*doc.email) : std::string();
    if (email.empty() || !is_valid_email(email)) {
      plan.notes.push_back({"invalid", collection, doc.raw_id,
                            doc.email ? "email is not a valid address; skipped" : "email is missing; skipped"});
      ++plan.invalid;
      continue;
    }
    for (const auto& field : doc.unreadable) {
      plan.notes.push_back({"dropped-field", collection, doc.raw_id, field + " is not a string or Date; ignored"});
    }
    groups[normalize_email(email)].push_back({&doc, email, created_of(doc)});
  }
  std::map<std::string, Entry> winners;
  for (auto& [key, entries] : groups) {
    std::sort(entries.begin(), entries.end(), older);
    for (size_t i = 1; i < entries.size(); ++i) {
      plan.notes.push_back({"duplicate", collection, entries[i].doc->raw_id,
                            "same email ignoring case as " + *entries[0].doc->id +
                                ", which is older (or as old with a smaller id); skipped"});
      ++plan.duplicates;
    }
    winners.emplace(key, entries.front());
  }
  return winners;
}

// First and last name: the directory record's when valid, else from the userName, else the email's local part.
void choose_names(const Entry* record, const Entry* account, User& user, ImportPlan& plan) {
  std::optional<std::pair<std::string, std::string>> from_user_name;
  if (account && account->doc->user_name) {
    auto derived = names_from_user_name(trim(*account->doc->user_name));
    if (valid_field("firstName", derived.first) && valid_field("lastName", derived.second)) from_user_name = derived;
  }
  const std::string local = user.email.substr(0, user.email.find('@'));
  auto pick = [&](const std::optional<std::string>& given, const char* field, const std::string& derived) {
    if (given && valid_field(field, *given)) return *given;
    if (record && given) {
      plan.notes.push_back({"dropped-field", kDirectory, record->doc->raw_id,
                            std::string(field) + " breaks usersd's rules; derived instead"});
    }
    return derived;
  };
  const auto& first_given = record ? record->doc->first_name : std::nullopt;
  const auto& last_given = record ? record->doc->last_name : std::nullopt;
  user.first_name = pick(first_given, "firstName", from_user_name ? from_user_name->first : local);
  user.last_name = pick(last_given, "lastName", from_user_name ? from_user_name->second : local);
}

void copy_optional(const Entry& record, const char* field, const std::optional<std::string>& given,
                   std::optional<std::string>& out, ImportPlan& plan) {
  if (!given) return;
  if (valid_field(field, *given)) {
    out = *given;
  } else {
    plan.notes.push_back({"dropped-field", kDirectory, record.doc->raw_id, std::string(field) + " breaks usersd's rules; left out"});
  }
}

User build_user(const Entry* record, const Entry* account, ImportPlan& plan) {
  const Entry& main = record ? *record : *account;
  User user;
  user.id = *main.doc->id;
  user.email = main.email;
  user.email_normalized = normalize_email(main.email);
  choose_names(record, account, user, plan);
  if (record) {
    copy_optional(*record, "phone", record->doc->phone, user.phone, plan);
    copy_optional(*record, "country", record->doc->country, user.country, plan);
    copy_optional(*record, "state", record->doc->state, user.state, plan);
  }
  if (account) {
    if (account->doc->user_name) {
      if (is_valid_user_name(*account->doc->user_name)) {
        user.user_name = *account->doc->user_name;
      } else {
        plan.notes.push_back({"dropped-field", kAccounts, account->doc->raw_id,
                              "userName is not 1 to 64 characters of A-Z a-z 0-9 . _ - @ +; left out"});
      }
    }
    const auto& hash = account->doc->password_hash;
    if (hash && is_bcrypt_hash(*hash)) {
      user.password_hash = *hash;
    } else {
      plan.notes.push_back({"dropped-field", kAccounts, account->doc->raw_id,
                            "hashPassword is not a bcrypt hash usersd can verify; the user cannot log in until an "
                            "admin sets a password"});
    }
  }
  user.role = Role::user;
  user.created_at_ms = user.updated_at_ms = main.created_ms;
  user.version = 1;
  return user;
}

}  // namespace

ImportPlan plan_legacy_import(const LegacyData& data) {
  ImportPlan plan;
  plan.accounts_read = static_cast<int64_t>(data.accounts.size());
  plan.directory_read = static_cast<int64_t>(data.directory.size());
  const auto accounts = winners_by_email(data.accounts, kAccounts, plan);
  const auto directory = winners_by_email(data.directory, kDirectory, plan);

  std::set<std::string> emails;
  for (const auto& [key, entry] : accounts) emails.insert(key);
  for (const auto& [key, entry] : directory) emails.insert(key);

  // Built in age order, so an older user keeps a userName two users share ignoring case.
  struct Built {
    User user;
    const Entry* account;
  };
  std::vector<Built> built;
  std::set<std::string> ids;
  for (const auto& key : emails) {
    const auto acc = accounts.find(key);
    const auto rec = directory.find(key);
    const Entry* account = acc != accounts.end() ? &acc->second : nullptr;
    const Entry* record = rec != directory.end() ? &rec->second : nullptr;
    const Entry& main = record ? *record : *account;
    if (!ids.insert(*main.doc->id).second) {
      plan.notes.push_back({"invalid", record ? kDirectory : kAccounts, main.doc->raw_id,
                            "_id is already used by a record of the other collection; skipped"});
      ++plan.invalid;
      continue;
    }
    if (account && record) {
      plan.notes.push_back({"merged", kDirectory, record->doc->raw_id, "merged with authusers " + account->doc->raw_id});
      ++plan.merged;
    } else if (account) {
      ++plan.accounts_only;
    } else {
      ++plan.directory_only;
    }
    built.push_back({build_user(record, account, plan), account});
  }
  std::sort(built.begin(), built.end(), [](const Built& a, const Built& b) {
    return std::tie(a.user.created_at_ms, a.user.id) < std::tie(b.user.created_at_ms, b.user.id);
  });
  std::map<std::string, std::string> user_names;  // normalized -> id of the user keeping it
  for (auto& [user, account] : built) {
    if (!user.user_name) continue;
    const auto [it, fresh] = user_names.emplace(normalize_user_name(*user.user_name), user.id);
    if (!fresh) {
      plan.notes.push_back({"dropped-field", kAccounts, account->doc->raw_id,
                            "userName is already used, ignoring case, by older user " + it->second + "; left out"});
      user.user_name.reset();
    }
  }
  for (auto& [user, account] : built) {
    if (user.password_hash.empty()) ++plan.without_password;
    plan.users.push_back(std::move(user));
  }
  std::sort(plan.users.begin(), plan.users.end(), [](const User& a, const User& b) { return a.id < b.id; });
  return plan;
}

bool same_user(const User& a, const User& b) {
  return std::tie(a.id, a.email, a.email_normalized, a.first_name, a.last_name, a.phone, a.country, a.state,
                  a.user_name, a.role, a.password_hash, a.created_at_ms, a.updated_at_ms, a.version) ==
         std::tie(b.id, b.email, b.email_normalized, b.first_name, b.last_name, b.phone, b.country, b.state,
                  b.user_name, b.role, b.password_hash, b.created_at_ms, b.updated_at_ms, b.version);
}

}  // namespace usersd
