#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "supervisor/backoff.hpp"
#include "supervisor/pidfile.hpp"
#include "supervisor/process_info.hpp"
#include "supervisor/sd_notify.hpp"

using namespace usersd;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/usersd-suptest-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Sets (or unsets, with nullptr) an environment variable for one scope.
struct EnvVar {
  std::string name;
  std::optional<std::string> saved;
  EnvVar(const char* n, const char* value) : name(n) {
    if (const char* old = std::getenv(n)) saved = old;
    if (value) {
      setenv(n, value, 1);
    } else {
      unsetenv(n);
    }
  }
  ~EnvVar() {
    if (saved) {
      setenv(name.c_str(), saved->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
};

int affinity_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
  return CPU_COUNT(&set);
}

std::optional<std::string> own_cgroup_path() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return std::nullopt;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Binds a datagram socket at `path` ("@name" = abstract) and returns the fd plus the address length used.
int bind_dgram(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socklen_t len;
  if (path[0] == '@') {
    std::memcpy(addr.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    std::memcpy(addr.sun_path, path.data(), path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  return fd;
}

std::optional<std::string> receive(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 2000) != 1) return std::nullopt;
  char buf[512];
  const ssize_t n = recv(fd, buf, sizeof(buf), 0);
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("cpus_from_cpu_max parses cgroup v2 quotas, rounding up") {
  CHECK_FALSE(cpus_from_cpu_max("max 100000").has_value());
  CHECK_FALSE(cpus_from_cpu_max("max 100000\n").has_value());
  CHECK(cpus_from_cpu_max("150000 100000") == 2);
  CHECK(cpus_from_cpu_max("50000 100000") == 1);
  CHECK(cpus_from_cpu_max("100000 100000\n") == 1);
  CHECK(cpus_from_cpu_max("400000 100000") == 4);
  CHECK(cpus_from_cpu_max("1 100000") == 1);
  CHECK_FALSE(cpus_from_cpu_max("").has_value());
  CHECK_FALSE(cpus_from_cpu_max("garbage").has_value());
  CHECK_FALSE(cpus_from_cpu_max("150000").has_value());
  CHECK_FALSE(cpus_from_cpu_max("150000 0").has_value());
  CHECK_FALSE(cpus_from_cpu_max("abc 100000").has_value());
  CHECK_FALSE(cpus_from_cpu_max("-5 100000").has_value());
  CHECK_FALSE(cpus_from_cpu_max("150000 100000 7").has_value());
}

TEST_CASE("available_cpus is the affinity mask limited by cpu.max along the cgroup path") {
  const int affinity = affinity_count();
  const auto cgroup = own_cgroup_path();

  SUBCASE("without a cgroup tree it is the affinity count") {
    TempDir empty;
    CHECK(available_cpus(empty.path.string()) == affinity);
    CHECK(available_cpus(empty.path.string() + "/does-not-exist") == affinity);
    CHECK(available_cpus() >= 1);
  }

  if (!cgroup) {
    MESSAGE("no cgroup v2 line in /proc/self/cgroup; skipping the fake-tree cases");
    return;
  }
  TempDir root;
  const std::filesystem::path leaf = root.path / std::filesystem::path(*cgroup).relative_path();

  SUBCASE("a one-CPU quota on our own cgroup") {
    write_text(leaf / "cpu.max", "100000 100000\n");
    CHECK(available_cpus(root.path.string()) == 1);
  }
  SUBCASE("no quota leaves the affinity count") {
    write_text(leaf / "cpu.max", "max 100000\n");
    CHECK(available_cpus(root.path.string()) == affinity);
  }
  SUBCASE("a quota never raises the affinity count") {
    write_text(leaf / "cpu.max", "100000000 100000\n");
    CHECK(available_cpus(root.path.string()) == affinity);
  }
  SUBCASE("garbage in cpu.max is ignored") {
    write_text(leaf / "cpu.max", "not a quota\n");
    CHECK(available_cpus(root.path.string()) == affinity);
  }
  SUBCASE("an ancestor's quota limits us too") {
    if (std::filesystem::path(*cgroup).relative_path().empty()) {
      MESSAGE("we are in the root cgroup (" << *cgroup << "); no ancestor to test");
    } else {
      write_text(leaf / "cpu.max", "max 100000\n");
      write_text(root.path / "cpu.max", "50000 100000\n");
      CHECK(available_cpus(root.path.string()) == 1);
    }
  }
}

TEST_CASE("sample_process reads CPU ticks and RSS from /proc") {
  const auto before = sample_process(getpid());
  REQUIRE(before.has_value());
  CHECK(before->rss_bytes > 0);

  // Burn ~60 ms of CPU so at least a few clock ticks (10 ms each at 100 Hz) get charged to us.
  const double start = process_cpu_seconds();
  volatile unsigned long sink = 0;
  while (process_cpu_seconds() - start < 0.06) {
    for (int i = 0; i < 10000; ++i) sink = sink + static_cast<unsigned long>(i);
  }
  const auto after = sample_process(getpid());
  REQUIRE(after.has_value());
  CHECK(after->cpu_ticks > before->cpu_ticks);
}

TEST_CASE("sample_process of a process that no longer exists is nullopt") {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(0);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK_FALSE(sample_process(child).has_value());
  CHECK_FALSE(sample_process(0).has_value());
  CHECK_FALSE(sample_process(-1).has_value());
}

TEST_CASE("cpu_percent converts a tick delta to percent of one core") {
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcessSample a{1000, 0};
  ProcessSample b{1000 + static_cast<uint64_t>(hz), 0};  // one second of CPU
  CHECK(cpu_percent(a, b, 1.0) == doctest::Approx(100.0));
  CHECK(cpu_percent(a, b, 2.0) == doctest::Approx(50.0));
  CHECK(cpu_percent(a, b, 0.5) == doctest::Approx(200.0));  // two cores busy
  CHECK(cpu_percent(a, a, 1.0) == doctest::Approx(0.0));
  CHECK(cpu_percent(a, b, 0.0) == 0.0);
  CHECK(cpu_percent(a, b, -1.0) == 0.0);
  CHECK(cpu_percent(b, a, 1.0) == 0.0);  // pid reused: counter went backwards
}

TEST_CASE("read_sysctl reads and trims /proc/sys values") {
  const auto pid_max = read_sysctl("kernel/pid_max");
  REQUIRE(pid_max.has_value());
  CHECK_FALSE(pid_max->empty());
  CHECK(pid_max->back() != '\n');
  CHECK(std::atol(pid_max->c_str()) > 0);
  CHECK_FALSE(read_sysctl("kernel/no_such_sysctl_usersd").has_value());
}

TEST_CASE("RestartBackoff grows by 1.5x from 100 ms, caps at 15 s and resets after 30 s up") {
  RestartBackoff backoff;
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(100));
  CHECK(backoff.on_exit(milliseconds(50)) == milliseconds(150));
  CHECK(backoff.on_exit(milliseconds(50)) == milliseconds(225));
  CHECK(backoff.on_exit(milliseconds(50)) == milliseconds(337));
  CHECK(backoff.on_exit(milliseconds(50)) == milliseconds(506));
  CHECK(backoff.consecutive_failures() == 5);

  for (int i = 0; i < 100; ++i) backoff.on_exit(milliseconds(10));
  CHECK(backoff.on_exit(milliseconds(10)) == milliseconds(15000));
  CHECK(backoff.consecutive_failures() == 106);

  // Just under the reset threshold still counts as a crash loop.
  CHECK(backoff.on_exit(milliseconds(29999)) == milliseconds(15000));
  CHECK(backoff.on_exit(milliseconds(30000)) == milliseconds(100));
  CHECK(backoff.consecutive_failures() == 1);
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(150));
  CHECK(backoff.on_exit(std::chrono::minutes(5)) == milliseconds(100));
}

TEST_CASE("RestartBackoff honours custom parameters") {
  RestartBackoff backoff(milliseconds(10), 2.0, milliseconds(50), milliseconds(1000));
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(10));
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(20));
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(40));
  CHECK(backoff.on_exit(milliseconds(0)) == milliseconds(50));
  CHECK(backoff.on_exit(milliseconds(1000)) == milliseconds(10));
}

TEST_CASE("SystemdNotifier sends exact datagrams to a filesystem socket") {
  TempDir dir;
  const std::string path = (dir.path / "notify.sock").string();
  Fd server(bind_dgram(path));

  SystemdNotifier notifier(path);
  CHECK(notifier.enabled());
  CHECK(notifier.notify("READY=1"));
  CHECK(receive(server.fd) == "READY=1");
  // The socket is reused for later messages.
  CHECK(notifier.notify("STATUS=4 workers online\nWATCHDOG=1"));
  CHECK(receive(server.fd) == "STATUS=4 workers online\nWATCHDOG=1");
}

TEST_CASE("SystemdNotifier handles the abstract namespace") {
  const std::string name = "@usersd-test-" + std::to_string(getpid());
  Fd server(bind_dgram(name));
  SystemdNotifier notifier(name);
  CHECK(notifier.notify("READY=1"));
  CHECK(receive(server.fd) == "READY=1");
}

TEST_CASE("SystemdNotifier without a socket is disabled and fails softly") {
  SystemdNotifier disabled("");
  CHECK_FALSE(disabled.enabled());
  CHECK_FALSE(disabled.notify("READY=1"));
  CHECK_FALSE(disabled.watchdog_interval().has_value());

  TempDir dir;
  SystemdNotifier missing((dir.path / "nobody-listens.sock").string());
  CHECK(missing.enabled());
  CHECK_FALSE(missing.notify("READY=1"));

  SystemdNotifier too_long("/" + std::string(200, 'x'));
  CHECK_FALSE(too_long.notify("READY=1"));
}

TEST_CASE("SystemdNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID") {
  const std::string own_pid = std::to_string(getpid());
  EnvVar socket_var("NOTIFY_SOCKET", "@usersd-env-test");
  EnvVar usec("WATCHDOG_USEC", "2000000");

  SUBCASE("no WATCHDOG_PID: the watchdog is ours") {
    EnvVar pid("WATCHDOG_PID", nullptr);
    SystemdNotifier notifier;
    CHECK(notifier.enabled());
    CHECK(notifier.watchdog_interval() == microseconds(1000000));
  }
  SUBCASE("WATCHDOG_PID equal to our pid") {
    EnvVar pid("WATCHDOG_PID", own_pid.c_str());
    CHECK(SystemdNotifier().watchdog_interval() == microseconds(1000000));
  }
  SUBCASE("WATCHDOG_PID of another process") {
    EnvVar pid("WATCHDOG_PID", "1");
    SystemdNotifier notifier;
    CHECK(notifier.enabled());
    CHECK_FALSE(notifier.watchdog_interval().has_value());
  }
  SUBCASE("invalid WATCHDOG_USEC") {
    EnvVar pid("WATCHDOG_PID", nullptr);
    EnvVar bad("WATCHDOG_USEC", "soon");
    CHECK_FALSE(SystemdNotifier().watchdog_interval().has_value());
  }
  SUBCASE("no NOTIFY_SOCKET") {
    EnvVar none("NOTIFY_SOCKET", nullptr);
    CHECK_FALSE(SystemdNotifier().enabled());
  }
}

TEST_CASE("SystemdNotifier explicit watchdog and monotonic_usec") {
  SystemdNotifier notifier("@x", microseconds(3000000));
  CHECK(notifier.watchdog_interval() == microseconds(1500000));
  CHECK_FALSE(SystemdNotifier("@x").watchdog_interval().has_value());

  const long long a = monotonic_usec();
  usleep(2000);
  const long long b = monotonic_usec();
  CHECK(a > 0);
  CHECK(b - a >= 2000);
}

TEST_CASE("PidFile: exclusive, reports the holder, and cleans up") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  const std::string own_pid = std::to_string(getpid());
  std::string error;

  {
    auto first = PidFile::acquire(path, error);
    REQUIRE(first.has_value());
    CHECK(first->path() == path);
    CHECK(first->write_pid());
    CHECK(read_text(path) == own_pid + "\n");
    CHECK(running_pid(path) == getpid());

    // A second open() is a separate open file description, so flock conflicts even within one process.
    std::string second_error;
    auto second = PidFile::acquire(path, second_error);
    CHECK_FALSE(second.has_value());
    CHECK(second_error.find("pid " + own_pid) != std::string::npos);
    CHECK(second_error.find(path) != std::string::npos);
    CHECK(std::filesystem::exists(path));  // the failed attempt must not remove the holder's file
  }
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(running_pid(path).has_value());
}

TEST_CASE("PidFile: a stale file is taken over and rewritten") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  write_text(path, "123456789012\n");
  CHECK_FALSE(running_pid(path).has_value());  // present but unlocked

  std::string error;
  auto pidfile = PidFile::acquire(path, error);
  REQUIRE(pidfile.has_value());
  CHECK(pidfile->write_pid());
  CHECK(read_text(path) == std::to_string(getpid()) + "\n");
  CHECK(running_pid(path).has_value());
  // Our own shared-lock probe must not have disturbed the lock.
  CHECK(running_pid(path) == getpid());
}

TEST_CASE("PidFile: held but not yet written reports an unknown pid") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  std::string error;
  auto pidfile = PidFile::acquire(path, error);
  REQUIRE(pidfile.has_value());
  CHECK_FALSE(running_pid(path).has_value());
  CHECK_FALSE(PidFile::acquire(path, error).has_value());
  CHECK(error.find("pid unknown") != std::string::npos);
}

TEST_CASE("PidFile: open failures name the path and the reason") {
  std::string error;
  const std::string path = "/nonexistent-usersd-dir/usersd.pid";
  CHECK_FALSE(PidFile::acquire(path, error).has_value());
  CHECK(error.find(path) != std::string::npos);
  CHECK(error.find(std::strerror(ENOENT)) != std::string::npos);
  CHECK_FALSE(running_pid(path).has_value());
}

TEST_CASE("PidFile: forget() closes without removing; moves transfer ownership") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  std::string error;

  auto pidfile = PidFile::acquire(path, error);
  REQUIRE(pidfile.has_value());
  pidfile->write_pid();
  pidfile->forget();
  CHECK_FALSE(pidfile->write_pid());
  pidfile.reset();
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(running_pid(path).has_value());  // the only descriptor was closed: nobody holds it

  auto moved_from = PidFile::acquire(path, error);
  REQUIRE(moved_from.has_value());
  PidFile owner(std::move(*moved_from));
  moved_from.reset();  // the moved-from shell must not unlink
  CHECK(std::filesystem::exists(path));
  CHECK(owner.write_pid());
  CHECK(running_pid(path) == getpid());

  const std::string other_path = (dir.path / "other.pid").string();
  auto other = PidFile::acquire(other_path, error);
  REQUIRE(other.has_value());
  owner = std::move(*other);  // releases the first claim
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(owner.path() == other_path);
  CHECK(std::filesystem::exists(other_path));
}

TEST_CASE("PidFile: a forked child cannot acquire the parent's pidfile") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  std::string error;
  auto pidfile = PidFile::acquire(path, error);
  REQUIRE(pidfile.has_value());
  REQUIRE(pidfile->write_pid());
  const std::string parent_pid = std::to_string(getpid());

  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::string child_error;
    auto attempt = PidFile::acquire(path, child_error);
    if (attempt) _exit(2);
    if (child_error.find("pid " + parent_pid) == std::string::npos) _exit(3);
    _exit(0);  // skip destructors: the inherited PidFile copy must not unlink the parent's file
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(running_pid(path) == getpid());
}

TEST_CASE("PidFile: after fork the parent can forget() and the child keeps the lock") {
  TempDir dir;
  const std::string path = (dir.path / "usersd.pid").string();
  std::string error;
  auto pidfile = PidFile::acquire(path, error);
  REQUIRE(pidfile.has_value());

  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The daemonized supervisor: records its own pid, waits, then exits normally (releasing the file).
    close(ready[0]);
    close(go[1]);
    if (!pidfile->write_pid()) _exit(2);
    char c = 'r';
    if (write(ready[1], &c, 1) != 1) _exit(3);
    if (read(go[0], &c, 1) != 1) _exit(4);
    pidfile.reset();
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  char c = 0;
  REQUIRE(read(ready[0], &c, 1) == 1);

  pidfile->forget();
  pidfile.reset();
  CHECK(std::filesystem::exists(path));
  CHECK(running_pid(path) == child);
  CHECK_FALSE(PidFile::acquire(path, error).has_value());
  CHECK(error.find("pid " + std::to_string(child)) != std::string::npos);

  REQUIRE(write(go[1], &c, 1) == 1);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  close(ready[0]);
  close(go[1]);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(running_pid(path).has_value());
}
