#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/config.hpp"

using namespace usersd;

namespace {

const std::string kSecret(40, 's');

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/usersd-config-XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    path = tmpl;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

std::variant<Config, ConfigError> load(std::optional<std::string> file, std::map<std::string, std::string> env = {},
                                       FlagOverrides flags = {}) {
  ConfigSources s;
  s.file = std::move(file);
  s.environment = std::move(env);
  if (!s.environment.count("USERSD_JWT_SECRET")) s.environment["USERSD_JWT_SECRET"] = kSecret;
  s.flags = std::move(flags);
  return load_config(s);
}

Config ok(const std::variant<Config, ConfigError>& r) {
  if (auto* e = std::get_if<ConfigError>(&r)) FAIL(e->line());
  return std::get<Config>(r);
}

ConfigError err(const std::variant<Config, ConfigError>& r) {
  REQUIRE(std::holds_alternative<ConfigError>(r));
  return std::get<ConfigError>(r);
}

}  // namespace

TEST_CASE("defaults are valid and the store defaults to SQLite under data_dir") {
  const Config c = ok(load(std::nullopt));
  CHECK(c.env == "development");
  CHECK(c.http.port == 3000);
  CHECK(c.workers == 0);
  CHECK(c.storage.url == "sqlite:///var/lib/usersd/usersd.db");
  CHECK(c.password.memlimit_kib >= 19 * 1024);
  CHECK(c.password.opslimit >= 2);
}

TEST_CASE("precedence: defaults < file < environment < flags") {
  TempFile f(R"({"http": {"port": 4000, "bind": "0.0.0.0"}, "workers": 3})");
  CHECK(ok(load(f.path.string())).http.port == 4000);
  CHECK(ok(load(f.path.string(), {{"USERSD_HTTP_PORT", "5000"}})).http.port == 5000);
  CHECK(ok(load(f.path.string(), {{"USERSD_HTTP_PORT", "5000"}}, {{"http.port", "6000"}})).http.port == 6000);
  CHECK(ok(load(f.path.string())).http.bind == "0.0.0.0");
  CHECK(ok(load(f.path.string())).workers == 3);
  CHECK(ok(load(f.path.string(), {{"USERSD_WORKERS", "auto"}})).workers == 0);
}

TEST_CASE("USERSD_CONFIG names the file when --config is absent") {
  TempFile f(R"({"http": {"port": 4100}})");
  CHECK(ok(load(std::nullopt, {{"USERSD_CONFIG", f.path.string()}})).http.port == 4100);
}

TEST_CASE("config files may carry // comments") {
  TempFile f("// production\n{\n  \"env\": \"development\" // inline\n}\n");
  CHECK(ok(load(f.path.string())).env == "development");
}

TEST_CASE("errors name the key and where the value came from") {
  SUBCASE("unknown key") {
    TempFile f(R"({"http": {"prot": 1}})");
    const auto e = err(load(f.path.string()));
    CHECK(e.key == "http.prot");
    CHECK(e.message.find("unknown key") != std::string::npos);
    CHECK(e.message.find(f.path.string()) != std::string::npos);
  }
  SUBCASE("wrong type") {
    TempFile f(R"({"http": {"port": "abc"}})");
    const auto e = err(load(f.path.string()));
    CHECK(e.key == "http.port");
    CHECK(e.message.find("must be an integer") != std::string::npos);
  }
  SUBCASE("section of the wrong type") {
    TempFile f(R"({"http": 3})");
    CHECK(err(load(f.path.string())).key == "http");
  }
  SUBCASE("out of range from the environment") {
    const auto e = err(load(std::nullopt, {{"USERSD_HTTP_PORT", "70000"}}));
    CHECK(e.key == "http.port");
    CHECK(e.message.find("USERSD_HTTP_PORT") != std::string::npos);
  }
  SUBCASE("not a number from a flag") {
    const auto e = err(load(std::nullopt, {}, {{"http.port", "12ab"}}));
    CHECK(e.key == "http.port");
    CHECK(e.message.find("command line") != std::string::npos);
  }
  SUBCASE("enum") { CHECK(err(load(std::nullopt, {{"USERSD_ENV", "staging"}})).key == "env"); }
  SUBCASE("workers") {
    CHECK(err(load(std::nullopt, {{"USERSD_WORKERS", "many"}})).key == "workers");
    CHECK(err(load(std::nullopt, {{"USERSD_WORKERS", "0"}})).key == "workers");
  }
  SUBCASE("bind must be an address") { CHECK(err(load(std::nullopt, {{"USERSD_HTTP_BIND", "example.com"}})).key == "http.bind"); }
  SUBCASE("store scheme") {
    const auto e = err(load(std::nullopt, {}, {{"storage.url", "postgres://u:hunter2@db/x"}}));
    CHECK(e.key == "storage.url");
    CHECK(e.message.find("hunter2") == std::string::npos);
  }
  SUBCASE("CORS origins must be origins") {
    TempFile f(R"({"http": {"cors_allowed_origins": ["https://ok.example.com", "https://bad.example.com/path"]}})");
    CHECK(err(load(f.path.string())).key == "http.cors_allowed_origins");
  }
  SUBCASE("trusted proxies must be addresses or networks") {
    TempFile f(R"({"http": {"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/40"]}})");
    const auto e = err(load(f.path.string()));
    CHECK(e.key == "http.trusted_proxies");
    CHECK(e.message.find("10.0.0.0/40") != std::string::npos);
  }
  SUBCASE("password parameters below OWASP's minimum") {
    TempFile f(R"({"password": {"memlimit_kib": 8192, "opslimit": 2}})");
    CHECK(err(load(f.path.string())).key == "password.opslimit");
  }
  SUBCASE("invalid JSON") {
    TempFile f(R"({"http": )");
    const auto e = err(load(f.path.string()));
    CHECK(e.key == "config");
    CHECK(e.line().find('\n') == std::string::npos);
  }
  SUBCASE("a number beyond a double is invalid JSON, not a crash") {
    TempFile f(R"({"http": {"port": 1e999}})");
    const auto e = err(load(f.path.string()));
    CHECK(e.key == "config");
    CHECK(e.message.find("invalid JSON") != std::string::npos);
  }
  SUBCASE("a control character in a key does not break the one-line error") {
    TempFile f("{\"\\nv\": 1, \"tab\\there\": 2}");
    const auto e = err(load(f.path.string()));
    CHECK(e.line().find('\n') == std::string::npos);
    CHECK(e.line().find('\t') == std::string::npos);
    CHECK(e.key.find("\\n") != std::string::npos);
  }
  SUBCASE("an empty key is named") {
    TempFile f(R"({"": 1})");
    CHECK(err(load(f.path.string())).key == "\"\"");
  }
  SUBCASE("missing file") { CHECK(err(load("/nonexistent/usersd.json")).key == "config"); }
}

TEST_CASE("JWT secret: environment, file, ephemeral in development, required in production") {
  SUBCASE("too short") {
    const auto e = err(load(std::nullopt, {{"USERSD_JWT_SECRET", "short"}}));
    CHECK(e.key == "jwt.secret");
    CHECK(e.message.find("short") == std::string::npos);  // never echo the secret
  }
  SUBCASE("production without a secret refuses") {
    ConfigSources s;
    s.environment = {{"USERSD_ENV", "production"}};
    CHECK(err(load_config(s)).key == "jwt.secret");
  }
  SUBCASE("development without a secret generates one") {
    ConfigSources s;
    const Config c = ok(load_config(s));
    CHECK(c.jwt.secret_source == "ephemeral");
    CHECK(c.jwt.secret.size() >= 32);
  }
  SUBCASE("from a file, trailing newline ignored") {
    TempFile secret(kSecret + "\n");
    ConfigSources s;
    s.environment = {{"USERSD_JWT_SECRET_FILE", secret.path.string()}};
    const Config c = ok(load_config(s));
    CHECK(c.jwt.secret == kSecret);
    CHECK(c.jwt.secret_source == "file");
  }
}

TEST_CASE("redaction hides secrets and URL passwords") {
  CHECK(redact_url("mongodb://app:s3cret@db.example.com:27017/users?tls=true") ==
        "mongodb://app:****@db.example.com:27017/users?tls=true");
  CHECK(redact_url("mongodb+srv://app:p%40ss@cluster0.example.mongodb.net/") ==
        "mongodb+srv://app:****@cluster0.example.mongodb.net/");
  CHECK(redact_url("mongodb://db.example.com/users") == "mongodb://db.example.com/users");
  CHECK(redact_url("sqlite:///var/lib/usersd/usersd.db") == "sqlite:///var/lib/usersd/usersd.db");
  const Config c = ok(load(std::nullopt));
  const std::string dumped = config_to_redacted_json(c).dump();
  CHECK(dumped.find(kSecret) == std::string::npos);
  CHECK(dumped.find("redacted") != std::string::npos);
}

TEST_CASE("log and admin keys: defaults and validation") {
  const Config c = ok(load(std::nullopt));
  CHECK(c.log.format == "json");
  CHECK(c.log.access);
  CHECK(c.admin.bind == "127.0.0.1");
  CHECK(c.admin.port == 9464);
  CHECK(ok(load(std::nullopt, {{"USERSD_ADMIN_PORT", "0"}})).admin.port == 0);
  CHECK(ok(load(std::nullopt, {{"USERSD_LOG_ACCESS", "false"}})).log.access == false);
  CHECK(err(load(std::nullopt, {{"USERSD_LOG_FORMAT", "xml"}})).key == "log.format");
  CHECK(err(load(std::nullopt, {{"USERSD_ADMIN_BIND", "localhost"}})).key == "admin.bind");
  CHECK(err(load(std::nullopt, {{"USERSD_ADMIN_PORT", "70000"}})).key == "admin.port");
  // /metrics on the public port would put it behind the load balancer.
  CHECK(err(load(std::nullopt, {{"USERSD_ADMIN_PORT", "3000"}})).key == "admin.port");
}
