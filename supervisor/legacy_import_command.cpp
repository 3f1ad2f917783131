// `usersd import-legacy --from mongodb://.../db [--store URL] [--dry-run]`: the Node.js service's users
// (collections authusers + users) into the usersd store, by the rules in common/legacy_import.hpp.
//
// Re-running is safe and is how a cut-over catches up: a user already imported and untouched since
// (version 1) is refreshed from the legacy data if that changed, one changed in usersd (a login that
// upgraded its hash, an edit) is kept as it is, a new legacy user is added. Nothing is ever deleted.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include "common/legacy_source.hpp"
#include "common/store_factory.hpp"
#include "common/user_input.hpp"
#include "supervisor/commands.hpp"

namespace usersd {
namespace {

// host[:port][,host...] of a MongoDB URL, without credentials.
std::string mongo_hosts(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  auto start = scheme + 3;
  const auto end = url.find_first_of("/?", start);
  const auto at = url.rfind('@', end == std::string::npos ? std::string::npos : end);
  if (at != std::string::npos && at >= start) start = at + 1;
  return url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

bool is_mongo_url(const std::string& url) { return url.starts_with("mongodb://") || url.starts_with("mongodb+srv://"); }

// What the target holds, for deciding every planned user before anything is written.
struct Existing {
  std::map<std::string, User> by_id;
  std::map<std::string, std::string> id_by_email;      // normalized email -> id
  std::map<std::string, std::string> id_by_user_name;  // normalized userName -> id
};

Result<Existing> load_existing(UserStore& store) {
  Existing out;
  PageRequest page;
  page.limit = 100;
  while (true) {
    auto result = store.list(page);
    if (!result) return result.error();
    for (auto& user : result.value().users) {
      out.id_by_email[user.email_normalized] = user.id;
      if (user.user_name) out.id_by_user_name[normalize_user_name(*user.user_name)] = user.id;
      out.by_id.emplace(user.id, std::move(user));
    }
    if (!result.value().has_more_after || result.value().users.empty()) break;
    page.after_id = result.value().users.back().id;
  }
  return out;
}

struct Tally {
  int64_t imported = 0, refreshed = 0, unchanged = 0, kept = 0, conflicts = 0;
};

void note(const std::string& kind, const std::string& collection, const std::string& id, const std::string& detail) {
  std::cout << kind << " " << collection << " " << id << ": " << detail << "\n";
}

}  // namespace

int run_import_legacy(const LegacyImportOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  auto config = load_config_or_report(options.config, /*resolve_secret=*/false);
  if (!config) return 1;
  if (!is_mongo_url(options.from)) {
    std::cerr << "usersd: import-legacy: --from must be a mongodb:// or mongodb+srv:// URL naming the Node.js service's database\n";
    return 1;
  }
  const std::string& target_url = config->storage.url;
  // usersd keeps its users in a collection named `users`, the name of the service's directory collection.
  if (is_mongo_url(target_url) && mongo_hosts(target_url) == mongo_hosts(options.from) &&
      mongo_url_database(target_url) == mongo_url_database(options.from)) {
    std::cerr << "usersd: import-legacy: --store names the Node.js service's own database; import into another "
                 "database (both have a collection named users)\n";
    return 1;
  }

  auto legacy = read_legacy_data(options.from);
  if (!legacy) {
    std::cerr << "usersd: import-legacy: " << legacy.error().message << "\n";
    return 1;
  }
  ImportPlan plan = plan_legacy_import(legacy.value());
  for (const auto& n : plan.notes) note(n.kind, n.collection, n.id, n.detail);

  auto opened = open_store(config->storage, 1);
  if (!opened) {
    std::cerr << "usersd: import-legacy: cannot open store " << redact_url(target_url) << ": " << opened.error().message << "\n";
    return 1;
  }
  auto& store = *opened.value();
  auto existing = load_existing(store);
  if (!existing) {
    std::cerr << "usersd: import-legacy: cannot read the store: " << existing.error().message << "\n";
    return 1;
  }
  Existing& have = existing.value();

  Tally tally;
  const auto writes_started = std::chrono::steady_clock::now();
  int64_t written = 0;
  for (User& user : plan.users) {
    const auto stored = have.by_id.find(user.id);
    if (stored != have.by_id.end() && same_user(stored->second, user)) {
      ++tally.unchanged;
      continue;
    }
    if (stored != have.by_id.end() && stored->second.version != 1) {
      note("kept", "usersd", user.id, "changed in usersd since it was imported (version " +
                                          std::to_string(stored->second.version) + "); left as it is");
      ++tally.kept;
      continue;
    }
    const auto email_owner = have.id_by_email.find(user.email_normalized);
    if (email_owner != have.id_by_email.end() && email_owner->second != user.id) {
      note("conflict", "usersd", user.id, "email belongs to usersd user " + email_owner->second + "; skipped");
      ++tally.conflicts;
      continue;
    }
    if (user.user_name) {
      const auto name_owner = have.id_by_user_name.find(normalize_user_name(*user.user_name));
      if (name_owner != have.id_by_user_name.end() && name_owner->second != user.id) {
        note("dropped-field", "usersd", user.id, "userName belongs to usersd user " + name_owner->second + "; left out");
        user.user_name.reset();
      }
    }
    const bool fresh = stored == have.by_id.end();
    if (!options.dry_run) {
      // create for new users: a user registered in usersd meanwhile with the same email wins (conflict).
      auto result = fresh ? store.create(user) : store.put(user);
      if (!result) {
        if (result.error().code != Errc::conflict) {
          std::cerr << "usersd: import-legacy: stopped after " << written << " writes: " << result.error().message
                    << "; run the same command again to finish\n";
          return 1;
        }
        note("conflict", "usersd", user.id, result.error().message + "; skipped");
        ++tally.conflicts;
        continue;
      }
      ++written;
    }
    ++(fresh ? tally.imported : tally.refreshed);
  }
  const auto finished = std::chrono::steady_clock::now();
  const double write_seconds = std::chrono::duration<double>(finished - writes_started).count();
  const double total_seconds = std::chrono::duration<double>(finished - started).count();

  const char* would = options.dry_run ? " (dry run: would be)" : "";
  std::cout << "summary" << (options.dry_run ? " (dry run: nothing was written)" : "") << "\n"
            << "  read:       " << plan.accounts_read << " authusers, " << plan.directory_read << " users\n"
            << "  merged:     " << plan.merged << " account + directory record pairs\n"
            << "  users:      " << plan.users.size() << " (" << plan.merged << " merged, " << plan.accounts_only
            << " accounts only, " << plan.directory_only << " directory records only; " << plan.without_password
            << " without a password)\n"
            << "  imported:   " << tally.imported << would << "\n"
            << "  refreshed:  " << tally.refreshed << would << " (imported before, unchanged in usersd, changed in the legacy data)\n"
            << "  unchanged:  " << tally.unchanged << "\n"
            << "  kept:       " << tally.kept << " (changed in usersd since imported)\n"
            << "  skipped:    " << plan.invalid + plan.duplicates + tally.conflicts << " (invalid " << plan.invalid
            << ", duplicate " << plan.duplicates << ", conflict with a usersd user " << tally.conflicts << ")\n";
  char rate[160];
  std::snprintf(rate, sizeof rate, "  time:       %.2f s in all; %lld writes in %.2f s (%.0f users/s)\n", total_seconds,
                static_cast<long long>(written), write_seconds, write_seconds > 0 ? written / write_seconds : 0.0);
  std::cout << rate << std::flush;
  return 0;
}

}  // namespace usersd
