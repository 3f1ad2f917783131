#include "common/config.hpp"

#include <arpa/inet.h>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/client_address.hpp"

extern char** environ;

namespace usersd {
namespace {

using json = nlohmann::json;

json throttle_document(const ThrottleConfig& t) {
  return {{"max_attempts", t.max_attempts},
          {"window_seconds", t.window_seconds},
          {"lockout_seconds", t.lockout_seconds},
          {"max_lockout_seconds", t.max_lockout_seconds}};
}

// The config as its file spells it. Applied to Config{} it gives the defaults, which double as the
// schema: a key not present there is unknown, and a value's JSON type must match the default's
// (`workers` alone also takes the string "auto").
json config_document(const Config& c) {
  return json{
      {"env", c.env},
      {"data_dir", c.data_dir},
      {"runtime_dir", c.runtime_dir},
      {"workers", c.workers == 0 ? json("auto") : json(c.workers)},
      {"registration_enabled", c.registration_enabled},
      {"worker_timeout", c.supervisor.worker_timeout},
      {"ready_timeout", c.supervisor.ready_timeout},
      {"graceful_timeout", c.supervisor.graceful_timeout},
      {"drain_delay", c.supervisor.drain_delay},
      {"max_requests", c.supervisor.max_requests},
      {"max_requests_jitter", c.supervisor.max_requests_jitter},
      {"max_memory_mb", c.supervisor.max_memory_mb},
      {"http",
       {{"bind", c.http.bind},
        {"port", c.http.port},
        {"threads", c.http.threads},
        {"max_body_bytes", c.http.max_body_bytes},
        {"keep_alive_timeout", c.http.keep_alive_timeout},
        {"keep_alive_max_requests", c.http.keep_alive_max_requests},
        {"read_timeout", c.http.read_timeout},
        {"write_timeout", c.http.write_timeout},
        {"cors_allowed_origins", c.http.cors_allowed_origins},
        {"header_timeout", c.http.header_timeout},
        {"body_timeout", c.http.body_timeout},
        {"max_header_bytes", c.http.max_header_bytes},
        {"max_header_count", c.http.max_header_count},
        {"max_connections_per_client", c.http.max_connections_per_client},
        {"trusted_proxies", c.http.trusted_proxies}}},
      {"jwt",
       {{"secret_file", c.jwt.secret_file},
        {"issuer", c.jwt.issuer},
        {"audience", c.jwt.audience},
        {"ttl", c.jwt.ttl}}},
      {"password",
       {{"memlimit_kib", c.password.memlimit_kib},
        {"opslimit", c.password.opslimit},
        {"max_concurrent_hashes", c.password.max_concurrent_hashes},
        {"max_queued_hashes", c.password.max_queued_hashes},
        {"max_wait_ms", c.password.max_wait_ms}}},
      {"limits",
       {{"table_entries", c.limits.table_entries},
        {"login", {{"per_account", throttle_document(c.limits.login_per_account)},
                   {"per_address", throttle_document(c.limits.login_per_address)}}},
        {"register", {{"per_address", throttle_document(c.limits.register_per_address)}}}}},
      {"storage",
       {{"url", c.storage.url},
        {"busy_timeout_ms", c.storage.busy_timeout_ms},
        {"server_selection_timeout_ms", c.storage.server_selection_timeout_ms},
        {"connect_timeout_ms", c.storage.connect_timeout_ms},
        {"socket_timeout_ms", c.storage.socket_timeout_ms}}},
      {"log", {{"level", c.log.level}, {"file", c.log.file}, {"format", c.log.format}, {"access", c.log.access}}},
      {"admin", {{"bind", c.admin.bind}, {"port", c.admin.port}}},
  };
}

json defaults_document() { return config_document(Config{}); }

struct ConfigFailure {
  ConfigError error;
};

// Keys and values in messages come from the file or environment: a control character in them (a key
// spelled "\nv") must not break the one-line error or reach a terminal raw.
std::string printable(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

[[noreturn]] void fail(const std::string& key, const std::string& message) {
  // A file may spell a key "": the error still names it.
  throw ConfigFailure{ConfigError{key.empty() ? "\"\"" : printable(key), printable(message)}};
}

const char* type_name(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

bool same_kind(const json& expected, const json& actual) {
  if (expected.is_number_integer()) return actual.is_number_integer();
  if (expected.is_array()) {
    return actual.is_array() &&
           std::all_of(actual.begin(), actual.end(), [](const json& e) { return e.is_string(); });
  }
  return expected.type() == actual.type();
}

std::string env_name_for(const std::string& key) {
  std::string name = "USERSD_";
  for (char c : key) name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

// Remembers where each key's value came from, so an error can say which file, variable or flag to fix.
class Layers {
 public:
  Layers() : doc_(defaults_document()) {}

  void merge_file(const json& src, const std::string& path) { merge_object(doc_, src, "", "in " + path); }

  void set_from_text(const std::string& key, const std::string& text, const std::string& origin) {
    json* slot = find(key);
    if (slot == nullptr) fail(key, "unknown key (" + origin + ")");
    *slot = parse_text(key, *slot, text, origin);
    origins_[key] = origin;
  }

  std::vector<std::string> leaf_keys() const {
    std::vector<std::string> keys;
    collect_leaves(doc_, "", keys);
    return keys;
  }

  const json& at(const std::string& key) const { return *const_cast<Layers*>(this)->find(key); }
  std::string origin(const std::string& key) const {
    auto it = origins_.find(key);
    return it == origins_.end() ? "default" : it->second;
  }

 private:
  json* find(const std::string& key) {
    json* node = &doc_;
    std::stringstream parts(key);
    for (std::string part; std::getline(parts, part, '.');) {
      if (!node->is_object() || !node->contains(part)) return nullptr;
      node = &(*node)[part];
    }
    return node;
  }

  void merge_object(json& target, const json& src, const std::string& prefix, const std::string& origin) {
    for (const auto& [name, value] : src.items()) {
      const std::string key = prefix.empty() ? name : prefix + "." + name;
      if (!target.contains(name)) fail(key, "unknown key " + origin);
      json& slot = target[name];
      if (slot.is_object()) {
        if (!value.is_object()) fail(key, std::string("must be an object, got ") + type_name(value) + " " + origin);
        merge_object(slot, value, key, origin);
        continue;
      }
      const bool workers_auto = key == "workers" && value.is_number_integer();
      if (!workers_auto && !same_kind(slot, value)) {
        fail(key, std::string("must be ") + (slot.is_array() ? "an array of strings" : type_name(slot)) +
                      ", got " + type_name(value) + " " + origin);
      }
      slot = value;
      origins_[key] = origin;
    }
  }

  static json parse_text(const std::string& key, const json& current, const std::string& text,
                         const std::string& origin) {
    if (key == "workers" && text == "auto") return text;
    if (current.is_number_integer() || key == "workers") {
      int64_t n = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
        fail(key, "must be an integer" + std::string(key == "workers" ? " or \"auto\"" : "") + ", got \"" + text +
                      "\" (" + origin + ")");
      }
      return n;
    }
    if (current.is_boolean()) {
      if (text == "true" || text == "1" || text == "yes") return true;
      if (text == "false" || text == "0" || text == "no") return false;
      fail(key, "must be true or false, got \"" + text + "\" (" + origin + ")");
    }
    if (current.is_array()) {
      json list = json::array();
      std::stringstream items(text);
      for (std::string item; std::getline(items, item, ',');) {
        if (!item.empty()) list.push_back(item);
      }
      return list;
    }
    return text;
  }

  static void collect_leaves(const json& node, const std::string& prefix, std::vector<std::string>& out) {
    for (const auto& [name, value] : node.items()) {
      const std::string key = prefix.empty() ? name : prefix + "." + name;
      if (value.is_object()) {
        collect_leaves(value, key, out);
      } else {
        out.push_back(key);
      }
    }
  }

  json doc_;
  std::map<std::string, std::string> origins_;
};

// Typed, range-checked reads from the merged document.
class Reader {
 public:
  explicit Reader(const Layers& layers) : layers_(layers) {}

  int64_t integer(const std::string& key, int64_t min, int64_t max) const {
    const int64_t v = layers_.at(key).get<int64_t>();
    if (v < min || v > max) {
      fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                    std::to_string(v) + where(key));
    }
    return v;
  }
  std::string string(const std::string& key) const { return layers_.at(key).get<std::string>(); }
  std::string non_empty(const std::string& key, size_t max_len = 4096) const {
    std::string v = string(key);
    if (v.empty() || v.size() > max_len) fail(key, "must be a non-empty string of at most " + std::to_string(max_len) + " characters" + where(key));
    return v;
  }
  std::string one_of(const std::string& key, const std::vector<std::string>& allowed) const {
    std::string v = string(key);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : "|") + a;
      fail(key, "must be one of " + list + ", got \"" + v + "\"" + where(key));
    }
    return v;
  }
  bool boolean(const std::string& key) const { return layers_.at(key).get<bool>(); }
  std::vector<std::string> strings(const std::string& key) const {
    return layers_.at(key).get<std::vector<std::string>>();
  }
  const json& raw(const std::string& key) const { return layers_.at(key); }
  std::string where(const std::string& key) const {
    const std::string origin = layers_.origin(key);
    return origin == "default" ? "" : " (" + origin + ")";
  }

 private:
  const Layers& layers_;
};

bool is_ip_address(const std::string& text) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

bool is_origin(const std::string& text) {
  if (text == "*") return true;
  const auto scheme_end = text.find("://");
  if (scheme_end == std::string::npos) return false;
  const std::string scheme = text.substr(0, scheme_end);
  const std::string rest = text.substr(scheme_end + 3);
  if (scheme != "http" && scheme != "https") return false;
  return !rest.empty() && rest.find('/') == std::string::npos;
}

std::string absolute(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

void read_storage(const Reader& r, Config& c) {
  c.storage.busy_timeout_ms = static_cast<int>(r.integer("storage.busy_timeout_ms", 0, 600000));
  c.storage.server_selection_timeout_ms = static_cast<int>(r.integer("storage.server_selection_timeout_ms", 100, 120000));
  c.storage.connect_timeout_ms = static_cast<int>(r.integer("storage.connect_timeout_ms", 100, 120000));
  c.storage.socket_timeout_ms = static_cast<int>(r.integer("storage.socket_timeout_ms", 100, 600000));
  std::string url = r.string("storage.url");
  if (url.empty()) url = "sqlite://" + c.data_dir + "/usersd.db";
  if (url.rfind("sqlite://", 0) == 0) {
    const std::string path = url.substr(9);
    if (path.empty()) fail("storage.url", "sqlite:// needs a file path, e.g. sqlite:///var/lib/usersd/usersd.db" + r.where("storage.url"));
    url = "sqlite://" + absolute(path);
  } else if (url.rfind("mongodb://", 0) != 0 && url.rfind("mongodb+srv://", 0) != 0) {
    fail("storage.url", "must start with sqlite://, mongodb:// or mongodb+srv://, got \"" + redact_url(url) + "\"" +
                            r.where("storage.url"));
  }
  c.storage.url = url;
}

void read_password(const Reader& r, Config& c) {
  c.password.memlimit_kib = r.integer("password.memlimit_kib", 7 * 1024, 4 * 1024 * 1024);
  c.password.opslimit = r.integer("password.opslimit", 1, 100);
  // OWASP's Argon2id table trades memory for passes; all its rows cost at least 35 MiB x passes.
  if (c.password.memlimit_kib * c.password.opslimit < 35 * 1024) {
    fail("password.opslimit", "memlimit_kib x opslimit must be at least 35840 (OWASP Argon2id minimum, e.g. 19456 x 2)" +
                                  r.where("password.opslimit"));
  }
  c.password.max_concurrent_hashes = static_cast<int>(r.integer("password.max_concurrent_hashes", 1, 256));
  c.password.max_queued_hashes = static_cast<int>(r.integer("password.max_queued_hashes", 0, 100000));
  c.password.max_wait_ms = static_cast<int>(r.integer("password.max_wait_ms", 1, 600000));
}

ThrottleConfig read_throttle(const Reader& r, const std::string& prefix) {
  ThrottleConfig t{};
  t.max_attempts = static_cast<int>(r.integer(prefix + ".max_attempts", 1, 1000000));
  t.window_seconds = static_cast<int>(r.integer(prefix + ".window_seconds", 1, 30 * 86400));
  t.lockout_seconds = static_cast<int>(r.integer(prefix + ".lockout_seconds", 1, 30 * 86400));
  t.max_lockout_seconds = static_cast<int>(r.integer(prefix + ".max_lockout_seconds", 1, 30 * 86400));
  if (t.max_lockout_seconds < t.lockout_seconds) {
    fail(prefix + ".max_lockout_seconds", "must be at least lockout_seconds (" + std::to_string(t.lockout_seconds) +
                                              ")" + r.where(prefix + ".max_lockout_seconds"));
  }
  return t;
}

void read_limits(const Reader& r, Config& c) {
  c.limits.table_entries = static_cast<int>(r.integer("limits.table_entries", 64, 1 << 24));
  c.limits.login_per_account = read_throttle(r, "limits.login.per_account");
  c.limits.login_per_address = read_throttle(r, "limits.login.per_address");
  c.limits.register_per_address = read_throttle(r, "limits.register.per_address");
}

void read_supervisor(const Reader& r, Config& c) {
  c.supervisor.worker_timeout = static_cast<int>(r.integer("worker_timeout", 1, 3600));
  c.supervisor.ready_timeout = static_cast<int>(r.integer("ready_timeout", 1, 3600));
  c.supervisor.graceful_timeout = static_cast<int>(r.integer("graceful_timeout", 1, 3600));
  c.supervisor.drain_delay = static_cast<int>(r.integer("drain_delay", 0, 3600));
  c.supervisor.max_requests = r.integer("max_requests", 0, int64_t{1} << 40);
  c.supervisor.max_requests_jitter = r.integer("max_requests_jitter", 0, int64_t{1} << 40);
  c.supervisor.max_memory_mb = r.integer("max_memory_mb", 0, 1 << 20);
}

void read_http(const Reader& r, Config& c) {
  c.http.bind = r.non_empty("http.bind", 64);
  if (!is_ip_address(c.http.bind)) fail("http.bind", "must be an IPv4 or IPv6 address, got \"" + c.http.bind + "\"" + r.where("http.bind"));
  c.http.port = static_cast<int>(r.integer("http.port", 1, 65535));
  c.http.threads = static_cast<int>(r.integer("http.threads", 1, 4096));
  c.http.max_body_bytes = r.integer("http.max_body_bytes", 1024, 16 * 1024 * 1024);
  c.http.keep_alive_timeout = static_cast<int>(r.integer("http.keep_alive_timeout", 1, 3600));
  c.http.keep_alive_max_requests = static_cast<int>(r.integer("http.keep_alive_max_requests", 1, 10000000));
  c.http.read_timeout = static_cast<int>(r.integer("http.read_timeout", 1, 3600));
  c.http.write_timeout = static_cast<int>(r.integer("http.write_timeout", 1, 3600));
  c.http.cors_allowed_origins = r.strings("http.cors_allowed_origins");
  c.http.header_timeout = static_cast<int>(r.integer("http.header_timeout", 1, 3600));
  c.http.body_timeout = static_cast<int>(r.integer("http.body_timeout", 1, 3600));
  c.http.max_header_bytes = static_cast<int>(r.integer("http.max_header_bytes", 1024, 1024 * 1024));
  c.http.max_header_count = static_cast<int>(r.integer("http.max_header_count", 8, 10000));
  c.http.max_connections_per_client = static_cast<int>(r.integer("http.max_connections_per_client", 1, 1000000));
  for (const auto& origin : c.http.cors_allowed_origins) {
    if (!is_origin(origin)) {
      fail("http.cors_allowed_origins", "\"" + origin + "\" is not an origin like https://app.example.com (no path) or *" +
                                             r.where("http.cors_allowed_origins"));
    }
  }
  c.http.trusted_proxies = r.strings("http.trusted_proxies");
  if (auto parsed = TrustedProxies::parse(c.http.trusted_proxies); std::holds_alternative<std::string>(parsed)) {
    fail("http.trusted_proxies", std::get<std::string>(parsed) + r.where("http.trusted_proxies"));
  }
}

std::string trim_trailing_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

void resolve_secret(const ConfigSources& sources, Config& c) {
  if (auto it = sources.environment.find("USERSD_JWT_SECRET"); it != sources.environment.end() && !it->second.empty()) {
    c.jwt.secret = it->second;
    c.jwt.secret_source = "environment";
  } else if (!c.jwt.secret_file.empty()) {
    std::ifstream in(c.jwt.secret_file, std::ios::binary);
    if (!in) fail("jwt.secret_file", "cannot read " + c.jwt.secret_file);
    std::stringstream ss;
    ss << in.rdbuf();
    c.jwt.secret = trim_trailing_newlines(ss.str());
    c.jwt.secret_source = "file";
  } else if (c.env == "production") {
    fail("jwt.secret", "production needs a signing secret: set USERSD_JWT_SECRET or jwt.secret_file");
  } else {
    unsigned char bytes[32];
    randombytes_buf(bytes, sizeof bytes);
    char hex[sizeof bytes * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
    c.jwt.secret = hex;
    c.jwt.secret_source = "ephemeral";
  }
  if (c.jwt.secret.size() < 32) {
    fail("jwt.secret", "must be at least 32 bytes, got " + std::to_string(c.jwt.secret.size()) + " (from " +
                           c.jwt.secret_source + ")");
  }
}

Config read_config(const Layers& layers, const ConfigSources& sources) {
  const Reader r(layers);
  Config c;
  c.env = r.one_of("env", {"development", "production"});
  c.data_dir = absolute(r.non_empty("data_dir"));
  c.runtime_dir = absolute(r.non_empty("runtime_dir"));
  if (const json& w = r.raw("workers"); w.is_string()) {
    if (w.get<std::string>() != "auto") fail("workers", "must be a number or \"auto\", got \"" + w.get<std::string>() + "\"" + r.where("workers"));
    c.workers = 0;
  } else {
    c.workers = static_cast<int>(r.integer("workers", 1, 1024));
  }
  c.registration_enabled = r.boolean("registration_enabled");
  read_supervisor(r, c);
  read_http(r, c);
  c.jwt.secret_file = r.string("jwt.secret_file");
  c.jwt.issuer = r.non_empty("jwt.issuer", 256);
  c.jwt.audience = r.non_empty("jwt.audience", 256);
  c.jwt.ttl = static_cast<int>(r.integer("jwt.ttl", 60, 30 * 86400));
  read_password(r, c);
  read_limits(r, c);
  read_storage(r, c);
  c.log.level = r.one_of("log.level", {"trace", "debug", "info", "warn", "error", "critical", "off"});
  c.log.file = r.string("log.file");
  if (!c.log.file.empty()) c.log.file = absolute(c.log.file);
  c.log.format = r.one_of("log.format", {"json", "text"});
  c.log.access = r.boolean("log.access");
  c.admin.bind = r.non_empty("admin.bind", 64);
  if (!is_ip_address(c.admin.bind)) fail("admin.bind", "must be an IPv4 or IPv6 address, got \"" + c.admin.bind + "\"" + r.where("admin.bind"));
  c.admin.port = static_cast<int>(r.integer("admin.port", 0, 65535));
  if (c.admin.port == c.http.port) {
    fail("admin.port", "must differ from http.port (" + std::to_string(c.http.port) + "): /metrics must not be public" +
                           r.where("admin.port"));
  }
  if (sources.resolve_secret) resolve_secret(sources, c);
  return c;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("config", "cannot read " + path);
  try {
    json doc = json::parse(in, nullptr, true, /*ignore_comments=*/true);
    if (!doc.is_object()) fail("config", path + " must hold a JSON object");
    return doc;
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond a double; nlohmann's message carries the position.
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 3, column 14: ..."
    const auto tail = what.find("] ");
    fail("config", path + ": invalid JSON: " + (tail == std::string::npos ? what : what.substr(tail + 2)));
  }
}

}  // namespace

std::variant<Config, ConfigError> load_config(const ConfigSources& sources) {
  if (sodium_init() < 0) return ConfigError{"jwt.secret", "libsodium failed to initialise"};
  try {
    Layers layers;
    std::optional<std::string> file = sources.file;
    if (!file) {
      if (auto it = sources.environment.find("USERSD_CONFIG"); it != sources.environment.end() && !it->second.empty()) {
        file = it->second;
      }
    }
    if (file) layers.merge_file(read_json_file(*file), *file);
    for (const auto& key : layers.leaf_keys()) {
      const std::string name = env_name_for(key);
      if (auto it = sources.environment.find(name); it != sources.environment.end()) {
        layers.set_from_text(key, it->second, "from environment " + name);
      }
    }
    for (const auto& [key, value] : sources.flags) layers.set_from_text(key, value, "from command line");
    Config config = read_config(layers, sources);
    if (file) config.config_file = absolute(*file);
    return config;
  } catch (const ConfigFailure& f) {
    return f.error;
  }
}

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    if (auto eq = entry.find('='); eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

std::string redact_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  const auto authority_start = scheme_end + 3;
  const auto authority_end = url.find_first_of("/?#", authority_start);
  const auto at = url.rfind('@', authority_end == std::string::npos ? std::string::npos : authority_end);
  if (at == std::string::npos || at < authority_start) return url;
  const auto colon = url.find(':', authority_start);
  if (colon == std::string::npos || colon > at) return url;  // user name only, no password
  return url.substr(0, colon + 1) + "****" + url.substr(at);
}

nlohmann::json config_to_redacted_json(const Config& c) {
  json doc = config_document(c);
  doc["config_file"] = c.config_file;
  doc["storage"]["url"] = redact_url(c.storage.url);
  doc["jwt"]["secret"] = c.jwt.secret.empty() ? "" : "<redacted, from " + c.jwt.secret_source + ">";
  return doc;
}

}  // namespace usersd
