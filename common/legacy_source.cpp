// One plain client (no pool: the import reads with one thread), reading both collections to the end.
// Documents are decoded field by field with typed bson_iter calls; nothing read is ever used as a query.
#include "common/legacy_source.hpp"

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include <cctype>
#include <memory>
#include <string_view>

#include "common/config.hpp"
#include "common/mongo_store.hpp"

namespace usersd {
namespace {

struct UriDeleter {
  void operator()(mongoc_uri_t* uri) const noexcept { mongoc_uri_destroy(uri); }
};
struct ClientDeleter {
  void operator()(mongoc_client_t* client) const noexcept { mongoc_client_destroy(client); }
};
struct CollectionDeleter {
  void operator()(mongoc_collection_t* collection) const noexcept { mongoc_collection_destroy(collection); }
};
struct CursorDeleter {
  void operator()(mongoc_cursor_t* cursor) const noexcept { mongoc_cursor_destroy(cursor); }
};
struct CharDeleter {
  void operator()(char* text) const noexcept { bson_free(text); }
};

Error unavailable(std::string message) { return {Errc::unavailable, std::move(message)}; }

// The driver does not promise to keep the URL's password out of its messages: cut it out.
std::string scrub(std::string message, const std::string& url) {
  const auto scheme = url.find("://");
  const auto at = url.find('@');
  if (scheme == std::string::npos || at == std::string::npos) return message;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at || colon + 1 == at) return message;
  const std::string secret = url.substr(colon + 1, at - colon - 1);
  for (auto pos = message.find(secret); pos != std::string::npos; pos = message.find(secret, pos)) {
    message.replace(pos, secret.size(), "****");
  }
  return message;
}

// A 24-hex-digit string _id is taken as the ObjectId it spells (some apps store ids as strings).
std::optional<std::string> hex_id(std::string_view text) {
  if (text.size() != 24) return std::nullopt;
  std::string out;
  for (char c : text) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

// The value at `it` as relaxed extended JSON, for reports about ids that are not ObjectIds.
std::string value_as_json(const bson_iter_t* it) {
  bson_t wrapper = BSON_INITIALIZER;
  bson_append_value(&wrapper, "v", 1, bson_iter_value(const_cast<bson_iter_t*>(it)));
  std::unique_ptr<char, CharDeleter> json(bson_as_relaxed_extended_json(&wrapper, nullptr));
  bson_destroy(&wrapper);
  std::string text = json ? json.get() : "?";
  // {"v" : X } -> X
  const auto colon = text.find(':');
  if (colon != std::string::npos && text.size() > colon + 3) text = text.substr(colon + 2, text.size() - colon - 4);
  return text;
}

LegacyDocument decode(const bson_t* doc) {
  LegacyDocument out;
  out.raw_id = "(no _id)";
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return out;
  while (bson_iter_next(&it)) {
    const std::string_view key(bson_iter_key(&it), bson_iter_key_len(&it));
    if (key == "_id") {
      if (BSON_ITER_HOLDS_OID(&it)) {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&it), hex);
        out.id = out.raw_id = hex;
      } else {
        out.raw_id = value_as_json(&it);
        if (BSON_ITER_HOLDS_UTF8(&it)) out.id = hex_id(bson_iter_utf8(&it, nullptr));
      }
      continue;
    }
    if (key == "create_at") {
      if (BSON_ITER_HOLDS_DATE_TIME(&it)) out.created_at_ms = bson_iter_date_time(&it);
      else if (!BSON_ITER_HOLDS_NULL(&it)) out.unreadable.emplace_back(key);
      continue;
    }
    std::optional<std::string>* target = nullptr;
    if (key == "email") target = &out.email;
    else if (key == "userName") target = &out.user_name;
    else if (key == "hashPassword") target = &out.password_hash;
    else if (key == "firstName") target = &out.first_name;
    else if (key == "lastName") target = &out.last_name;
    else if (key == "phone") target = &out.phone;
    else if (key == "country") target = &out.country;
    else if (key == "state") target = &out.state;
    if (target == nullptr) continue;  // __v and fields the service never had
    if (BSON_ITER_HOLDS_UTF8(&it)) {
      uint32_t length = 0;
      const char* text = bson_iter_utf8(&it, &length);
      *target = std::string(text, length);
    } else if (!BSON_ITER_HOLDS_NULL(&it)) {
      out.unreadable.emplace_back(key);
    }
  }
  return out;
}

Result<std::vector<LegacyDocument>> read_collection(mongoc_client_t* client, const std::string& database,
                                                    const char* name, const std::string& url) {
  std::unique_ptr<mongoc_collection_t, CollectionDeleter> collection(
      mongoc_client_get_collection(client, database.c_str(), name));
  bson_t filter = BSON_INITIALIZER;
  bson_t opts = BSON_INITIALIZER;
  bson_t sort;
  bson_append_document_begin(&opts, "sort", -1, &sort);
  bson_append_int32(&sort, "_id", -1, 1);
  bson_append_document_end(&opts, &sort);
  std::unique_ptr<mongoc_cursor_t, CursorDeleter> cursor(
      mongoc_collection_find_with_opts(collection.get(), &filter, &opts, nullptr));
  bson_destroy(&opts);
  bson_destroy(&filter);
  std::vector<LegacyDocument> docs;
  const bson_t* doc = nullptr;
  while (mongoc_cursor_next(cursor.get(), &doc)) docs.push_back(decode(doc));
  bson_error_t error;
  if (mongoc_cursor_error(cursor.get(), &error)) {
    return unavailable("reading " + database + "." + name + " from " + redact_url(url) + ": " + scrub(error.message, url));
  }
  return docs;
}

}  // namespace

std::string mongo_url_database(const std::string& url) {
  bson_error_t error;
  std::unique_ptr<mongoc_uri_t, UriDeleter> uri(mongoc_uri_new_with_error(url.c_str(), &error));
  if (!uri) return "";
  const char* database = mongoc_uri_get_database(uri.get());
  return database != nullptr ? database : "";
}

Result<LegacyData> read_legacy_data(const std::string& url) {
  init_mongo_driver();
  const std::string described = redact_url(url);
  bson_error_t error;
  std::unique_ptr<mongoc_uri_t, UriDeleter> uri(mongoc_uri_new_with_error(url.c_str(), &error));
  if (!uri) return unavailable("invalid MongoDB URL " + described);
  const char* database = mongoc_uri_get_database(uri.get());
  if (database == nullptr || *database == '\0') {
    return Error{Errc::invalid, "--from must name the Node.js service's database, e.g. mongodb://host:27017/mydb"};
  }
  // Fail within seconds when the server is unreachable, unless the URL chose otherwise.
  if (!mongoc_uri_has_option(uri.get(), MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
    mongoc_uri_set_option_as_int32(uri.get(), MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  }
  std::unique_ptr<mongoc_client_t, ClientDeleter> client(mongoc_client_new_from_uri_with_error(uri.get(), &error));
  if (!client) return unavailable("cannot connect to " + described);
  mongoc_client_set_error_api(client.get(), MONGOC_ERROR_API_VERSION_2);
  mongoc_client_set_appname(client.get(), "usersd-import-legacy");

  LegacyData data;
  auto accounts = read_collection(client.get(), database, "authusers", url);
  if (!accounts) return accounts.error();
  auto directory = read_collection(client.get(), database, "users", url);
  if (!directory) return directory.error();
  data.accounts = std::move(accounts).value();
  data.directory = std::move(directory).value();
  return data;
}

}  // namespace usersd
