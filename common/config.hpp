// Effective configuration: built-in defaults < config file < USERSD_* environment < command-line flags.
// Secrets come only from the environment or a file the config points to, never from flags or the file itself.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <variant>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace usersd {

struct HttpConfig {
  std::string bind = "127.0.0.1";
  int port = 3000;
  int threads = 32;                    // connection-handling threads per worker (one per open connection)
  int64_t max_body_bytes = 64 * 1024;
  int keep_alive_timeout = 75;         // seconds; must exceed the ALB idle timeout (60 s)
  int keep_alive_max_requests = 10000;
  int read_timeout = 10;               // seconds
  int write_timeout = 10;              // seconds
  std::vector<std::string> cors_allowed_origins;
  // Slow and oversized clients (see docs/security.md).
  int header_timeout = 10;             // seconds for a request's line and headers to arrive, in total
  int body_timeout = 30;               // seconds for its body, in total
  int max_header_bytes = 16384;        // request line + headers; more gets 431
  int max_header_count = 100;          // header lines; more gets 431
  int max_connections_per_client = 16; // open connections per client address per worker (trusted proxies exempt)
  // Load balancers whose X-Forwarded-For is believed (IPs or CIDRs); empty: the peer is the client.
  std::vector<std::string> trusted_proxies;
};

struct JwtConfig {
  std::string secret;        // only from USERSD_JWT_SECRET or secret_file
  std::string secret_file;
  std::string secret_source; // "environment", "file", "ephemeral": shown instead of the secret
  std::string issuer = "usersd";
  std::string audience = "usersd";
  int ttl = 3600;            // seconds
};

struct PasswordConfig {
  int64_t memlimit_kib = 19 * 1024;
  int64_t opslimit = 2;
  int max_concurrent_hashes = 2;
  int max_queued_hashes = 16;   // requests waiting for a hashing slot; more get 503 at once
  int max_wait_ms = 10000;      // how long one waits for a slot before 503
};

// Repeated attempts per key: after max_attempts within window_seconds, locked for lockout_seconds,
// doubling for each further lockout up to max_lockout_seconds.
struct ThrottleConfig {
  int max_attempts;
  int window_seconds;
  int lockout_seconds;
  int max_lockout_seconds;
};

// Abuse limits shared by all workers of one instance (a shared-memory table made by the supervisor).
struct LimitsConfig {
  int table_entries = 65536;  // keys tracked at once; the table is fixed when the supervisor starts
  ThrottleConfig login_per_account{5, 900, 60, 3600};   // failed logins per normalized email
  ThrottleConfig login_per_address{50, 900, 300, 3600}; // failed logins per client address
  ThrottleConfig register_per_address{20, 3600, 3600, 86400};  // registrations per client address
};

struct StorageConfig {
  std::string url;           // sqlite:///abs/path.db | mongodb://... ; default: sqlite under data_dir
  int busy_timeout_ms = 5000;       // SQLite: wait this long for another process's write lock
  // MongoDB, used when the URL does not set them: a request never waits the driver's 30 s defaults.
  int server_selection_timeout_ms = 2000;
  int connect_timeout_ms = 2000;
  int socket_timeout_ms = 5000;
};

struct LogConfig {
  std::string level = "info";   // trace|debug|info|warn|error|critical|off
  std::string file;             // empty: stdout
  std::string format = "json";  // json (one object per line) | text (for a terminal in development)
  bool access = true;           // one access log line per request
};

// The admin listener serves GET /metrics (Prometheus); it must not be reachable through the load balancer.
struct AdminConfig {
  std::string bind = "127.0.0.1";
  int port = 9464;              // 0: no admin listener
};

// How the supervisor keeps workers alive and replaces them (times in seconds).
struct SupervisorConfig {
  int worker_timeout = 30;     // no heartbeat for this long: the worker is hung and gets killed
  int ready_timeout = 30;      // a new worker must be accepting within this (reload aborts otherwise)
  int graceful_timeout = 30;   // in-flight requests get this long to finish before SIGKILL
  int drain_delay = 0;         // on stop, /healthcheck answers 503 this long before listeners close
  int64_t max_requests = 0;    // recycle a worker after this many requests (0: never) ...
  int64_t max_requests_jitter = 0;  // ... plus a random 0..jitter, so workers do not recycle together
  int64_t max_memory_mb = 0;   // recycle a worker whose RSS exceeds this (0: never)
};

struct Config {
  std::string env = "development";  // development|production
  std::string data_dir = "/var/lib/usersd";
  std::string runtime_dir = "/run/usersd";
  int workers = 0;                  // 0 = auto (CPUs available to this process)
  SupervisorConfig supervisor;
  bool registration_enabled = true;
  HttpConfig http;
  JwtConfig jwt;
  PasswordConfig password;
  LimitsConfig limits;
  StorageConfig storage;
  LogConfig log;
  AdminConfig admin;
  std::string config_file;          // the file that was read, if any
};

struct ConfigError {
  std::string key;      // dotted key, e.g. "http.port"
  std::string message;  // one line, e.g. "must be an integer between 1 and 65535 (got 70000) in /etc/usersd.json"
  std::string line() const { return "config error: " + key + ": " + message; }
};

// Values from command-line flags, keyed by dotted config key ("http.port" -> "8080").
using FlagOverrides = std::map<std::string, std::string>;

struct ConfigSources {
  std::optional<std::string> file;               // --config; when unset, USERSD_CONFIG, else none
  std::map<std::string, std::string> environment; // usually the process environment
  FlagOverrides flags;
  bool resolve_secret = true;                     // read/generate the JWT secret (not needed by `user add`)
};

// Loads, validates and resolves the effective config. Never throws.
std::variant<Config, ConfigError> load_config(const ConfigSources& sources);

std::map<std::string, std::string> process_environment();

// The effective config as JSON with secrets and URL credentials redacted (for `config check`, logs, status).
nlohmann::json config_to_redacted_json(const Config& config);

// "mongodb://user:pass@host/db" -> "mongodb://user:****@host/db"; URLs without credentials unchanged.
std::string redact_url(const std::string& url);

}  // namespace usersd
