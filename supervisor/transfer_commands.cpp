// `usersd export` and `usersd import`: a lossless JSON-lines copy of every user (password hashes,
// ids, timestamps and versions included), so a team can move from SQLite to MongoDB with two commands.
//
// Import is validated completely before the first write: a bad line stops it with the line number and
// nothing is written. Writes are idempotent puts by id, so re-importing a file changes nothing, and an
// import interrupted while writing (the store went away) is completed by running it again.
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include "common/ids.hpp"
#include "common/legacy_bcrypt.hpp"
#include "common/store_factory.hpp"
#include "common/time_format.hpp"
#include "common/user_input.hpp"
#include "supervisor/commands.hpp"

namespace usersd {
namespace {

using json = nlohmann::json;

json export_line(const User& u) {
  json line = {{"id", u.id},
               {"email", u.email},
               {"firstName", u.first_name},
               {"lastName", u.last_name},
               {"role", role_name(u.role)},
               {"passwordHash", u.password_hash},
               {"createdAt", format_rfc3339_ms(u.created_at_ms)},
               {"updatedAt", format_rfc3339_ms(u.updated_at_ms)},
               {"version", u.version}};
  if (u.phone) line["phone"] = *u.phone;
  if (u.country) line["country"] = *u.country;
  if (u.state) line["state"] = *u.state;
  if (u.user_name) line["userName"] = *u.user_name;
  return line;
}

// Parses and validates one exported line with the API's own field rules. Returns the problem, if any.
std::optional<std::string> import_line(const std::string& text, User& out) {
  const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (line.is_discarded() || !line.is_object()) return "not a JSON object";
  json profile = json::object();
  for (const auto& [key, value] : line.items()) {
    if (key == "id" || key == "passwordHash" || key == "createdAt" || key == "updatedAt" || key == "version") continue;
    profile[key] = value;
  }
  UserInput input;
  if (auto errors = parse_user_input(profile, UserOperation::replace, /*caller_is_admin=*/true, {}, input);
      !errors.empty()) {
    return errors.front().field + ": " + errors.front().message;
  }
  apply_user_input(input, UserOperation::replace, out);
  if (!line.contains("role")) return "role: is required";
  const auto id = line.find("id");
  if (id == line.end() || !id->is_string() || !is_object_id(id->get<std::string>())) return "id: must be 24 hex digits";
  out.id = id->get<std::string>();
  const auto hash = line.find("passwordHash");
  // Argon2, a legacy bcrypt hash not yet upgraded by a login, or empty (imported by import-legacy
  // without a password): all three must survive export/import unchanged.
  if (hash == line.end() || !hash->is_string() ||
      !(hash->get<std::string>().rfind("$argon2", 0) == 0 || is_bcrypt_hash(hash->get<std::string>()) ||
        hash->get<std::string>().empty())) {
    return "passwordHash: must be an Argon2 or bcrypt hash, or empty";
  }
  out.password_hash = hash->get<std::string>();
  for (auto [key, target] : {std::pair{"createdAt", &out.created_at_ms}, std::pair{"updatedAt", &out.updated_at_ms}}) {
    const auto it = line.find(key);
    const auto ms = it != line.end() && it->is_string() ? parse_rfc3339_ms(it->get<std::string>()) : std::nullopt;
    if (!ms) return std::string(key) + ": must be an RFC 3339 UTC time";
    *target = *ms;
  }
  const auto version = line.find("version");
  if (version == line.end() || !version->is_number_integer() || version->get<int64_t>() < 1) {
    return "version: must be a positive integer";
  }
  out.version = version->get<int64_t>();
  return std::nullopt;
}

std::unique_ptr<UserStore> open_or_report(const Config& config) {
  auto store = open_store(config.storage, 1);
  if (!store) {
    std::cerr << "usersd: cannot open store " << redact_url(config.storage.url) << ": " << store.error().message << "\n";
    return nullptr;
  }
  return std::move(store).value();
}

}  // namespace

int run_export(const ConfigFlags& flags) {
  auto config = load_config_or_report(flags, /*resolve_secret=*/false);
  if (!config) return 1;
  auto store = open_or_report(*config);
  if (!store) return 1;
  PageRequest page;
  page.limit = 100;
  int64_t count = 0;
  while (true) {
    auto result = store->list(page);
    if (!result) {
      std::cerr << "usersd: export failed after " << count << " users: " << result.error().message << "\n";
      return 1;
    }
    for (const auto& user : result.value().users) std::cout << export_line(user).dump() << "\n";
    count += static_cast<int64_t>(result.value().users.size());
    if (!result.value().has_more_after || result.value().users.empty()) break;
    page.after_id = result.value().users.back().id;
  }
  std::cout.flush();
  std::cerr << "usersd: exported " << count << " users from " << redact_url(config->storage.url) << "\n";
  return std::cout ? 0 : 1;
}

int run_import(const ConfigFlags& flags) {
  auto config = load_config_or_report(flags, /*resolve_secret=*/false);
  if (!config) return 1;
  auto store = open_or_report(*config);
  if (!store) return 1;

  // Pass 1: validate every line (and its fit with what the store holds), spooling to a temp file.
  std::unique_ptr<FILE, int (*)(FILE*)> spool(std::tmpfile(), &std::fclose);
  if (!spool) {
    std::cerr << "usersd: import: cannot create a temporary file\n";
    return 1;
  }
  std::set<std::string> ids, emails, user_names;
  std::string text;
  int64_t line_number = 0, users = 0;
  while (std::getline(std::cin, text)) {
    ++line_number;
    if (text.empty()) continue;
    User user;
    auto problem = import_line(text, user);
    if (!problem && !ids.insert(user.id).second) problem = "id " + user.id + " appears twice in the file";
    if (!problem && !emails.insert(user.email_normalized).second) problem = "email appears twice in the file";
    if (!problem && user.user_name && !user_names.insert(normalize_user_name(*user.user_name)).second) {
      problem = "userName appears twice in the file";
    }
    if (!problem && user.user_name) {
      auto existing = store->find_by_user_name(*user.user_name);
      if (existing && existing.value().id != user.id) {
        problem = "userName belongs to another user in the store (id " + existing.value().id + ")";
      } else if (!existing && existing.error().code != Errc::not_found) {
        problem = "store unavailable: " + existing.error().message;
      }
    }
    if (!problem) {
      auto existing = store->find_by_email(user.email_normalized);
      if (existing && existing.value().id != user.id) {
        problem = "email belongs to another user in the store (id " + existing.value().id + ")";
      } else if (!existing && existing.error().code != Errc::not_found) {
        problem = "store unavailable: " + existing.error().message;
      }
    }
    if (problem) {
      std::cerr << "usersd: import: line " << line_number << ": " << *problem << "; nothing was imported\n";
      return 1;
    }
    const std::string record = export_line(user).dump() + "\n";
    std::fwrite(record.data(), 1, record.size(), spool.get());
    ++users;
  }
  // Pass 2: write. Puts are idempotent, so a run cut short here is completed by running it again.
  std::rewind(spool.get());
  char* buffer = nullptr;
  size_t capacity = 0;
  int64_t written = 0;
  while (getline(&buffer, &capacity, spool.get()) > 0) {
    User user;
    import_line(buffer, user);
    if (auto put = store->put(user); !put) {
      std::free(buffer);
      std::cerr << "usersd: import stopped after " << written << " of " << users << " users: " << put.error().message
                << "; run the same import again to finish it\n";
      return 1;
    }
    ++written;
  }
  std::free(buffer);
  std::cerr << "usersd: imported " << written << " users into " << redact_url(config->storage.url) << "\n";
  return 0;
}

}  // namespace usersd
