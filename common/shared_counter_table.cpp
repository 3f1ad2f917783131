#include "common/shared_counter_table.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace usersd {

struct SharedCounterTable::Header {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t capacity;
  unsigned char hash_key[crypto_generichash_KEYBYTES];  // random per table: keys cannot be chosen to collide
  pthread_mutex_t mutex;
  uint64_t evictions;
};

namespace {

constexpr uint64_t kMagic = 0x7573657273643132ULL;  // "usersd12"
constexpr uint32_t kLayoutVersion = 1;

constexpr size_t kHeaderBytes = 256;  // reserved ahead of the entries, fixed so the layout is stable

bool is_zero(const unsigned char* digest) {
  for (int i = 0; i < 16; ++i) {
    if (digest[i] != 0) return false;
  }
  return true;
}

// Holds the table's robust mutex. A previous owner that died mid-update left at most one entry half
// written, which the next expiry cleans up: mark the mutex usable again and carry on.
class TableLock {
 public:
  explicit TableLock(pthread_mutex_t& m) : m_(m) {
    if (pthread_mutex_lock(&m_) == EOWNERDEAD) pthread_mutex_consistent(&m_);
  }
  ~TableLock() { pthread_mutex_unlock(&m_); }
  TableLock(const TableLock&) = delete;
  TableLock& operator=(const TableLock&) = delete;

 private:
  pthread_mutex_t& m_;
};

}  // namespace

size_t SharedCounterTable::bytes_for(uint32_t capacity) {
  static_assert(sizeof(Header) <= 256, "header must fit its reserved space");
  return kHeaderBytes + static_cast<size_t>(capacity) * sizeof(CounterEntry);
}

SharedCounterTable::Header& SharedCounterTable::header() const { return *static_cast<Header*>(base_); }

CounterEntry* SharedCounterTable::entries() const {
  return reinterpret_cast<CounterEntry*>(static_cast<unsigned char*>(base_) + kHeaderBytes);
}

// Lays out a fresh table in `base`: bytes_for(capacity) zeroed bytes.
bool SharedCounterTable::lay_out(void* base, uint32_t capacity, bool process_shared) {
  // The entries are zero already (a fresh memfd or anonymous mapping): leave their pages untouched.
  auto* h = new (base) Header{};
  h->magic = kMagic;
  h->layout_version = kLayoutVersion;
  h->capacity = capacity;
  randombytes_buf(h->hash_key, sizeof h->hash_key);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  if (process_shared) pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const bool ok = pthread_mutex_init(&h->mutex, &attr) == 0;
  pthread_mutexattr_destroy(&attr);
  return ok;
}

std::variant<int, std::string> SharedCounterTable::create_memfd(uint32_t capacity) {
  if (capacity < kMinCapacity || capacity > kMaxCapacity) return std::string("table capacity out of range");
  if (sodium_init() < 0) return std::string("libsodium failed to initialise");
  const int fd = ::memfd_create("usersd-limits", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return std::string("memfd_create: ") + std::strerror(errno);
  const size_t bytes = bytes_for(capacity);
  auto fail = [fd](const char* what) {
    const std::string message = std::string(what) + ": " + std::strerror(errno);
    ::close(fd);
    return message;
  };
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return fail("ftruncate");
  // A worker can neither shrink the table under its siblings (SIGBUS) nor grow it.
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return fail("sealing the table");
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return fail("mmap");
  const bool ok = lay_out(base, capacity, /*process_shared=*/true);
  ::munmap(base, bytes);
  if (!ok) {
    ::close(fd);
    return std::string("cannot initialise the table's mutex");
  }
  return fd;
}

std::variant<SharedCounterTable, std::string> SharedCounterTable::attach(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::string("the limits table fd: ") + std::strerror(errno);
  const auto size = static_cast<size_t>(st.st_size);
  if (size < bytes_for(kMinCapacity)) return std::string("the limits table is too small");
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return std::string("mapping the limits table: ") + std::strerror(errno);
  SharedCounterTable table(base, size);
  const Header& h = table.header();
  if (h.magic != kMagic || h.layout_version != kLayoutVersion || h.capacity < kMinCapacity ||
      h.capacity > kMaxCapacity || bytes_for(h.capacity) > size) {
    return std::string("the limits table has an unknown layout (a supervisor from another build?)");
  }
  return table;
}

SharedCounterTable SharedCounterTable::create_private(uint32_t capacity) {
  if (capacity < kMinCapacity || capacity > kMaxCapacity) throw std::invalid_argument("table capacity out of range");
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  const size_t bytes = bytes_for(capacity);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  SharedCounterTable table(base, bytes);
  if (!lay_out(base, capacity, /*process_shared=*/false)) throw std::runtime_error("mutex init failed");
  return table;
}

SharedCounterTable::SharedCounterTable(SharedCounterTable&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

SharedCounterTable& SharedCounterTable::operator=(SharedCounterTable&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

SharedCounterTable::~SharedCounterTable() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

uint32_t SharedCounterTable::capacity() const { return header().capacity; }

uint64_t SharedCounterTable::evictions() const {
  TableLock lock(header().mutex);
  return header().evictions;
}

void SharedCounterTable::digest_of(std::string_view key, unsigned char out[16]) const {
  crypto_generichash(out, 16, reinterpret_cast<const unsigned char*>(key.data()), key.size(), header().hash_key,
                     sizeof header().hash_key);
  if (is_zero(out)) out[0] = 1;  // all zero means "never used"
}

void SharedCounterTable::update(std::string_view key, int64_t now_ms,
                                const std::function<void(CounterEntry&)>& change) {
  unsigned char digest[16];
  digest_of(key, digest);
  uint64_t home = 0;
  std::memcpy(&home, digest, sizeof home);
  const uint32_t cap = header().capacity;
  CounterEntry* table = entries();

  TableLock lock(header().mutex);
  CounterEntry* found = nullptr;
  CounterEntry* free_slot = nullptr;  // first never-used or expired slot in the window
  CounterEntry* victim = nullptr;     // the live entry closest to expiry, if the window is full
  for (uint32_t i = 0; i < kProbeWindow; ++i) {
    CounterEntry& e = table[(home + i) % cap];
    if (std::memcmp(e.digest, digest, 16) == 0) {
      found = &e;
      break;
    }
    const bool reusable = is_zero(e.digest) || e.expires_ms <= now_ms;
    if (reusable && free_slot == nullptr) free_slot = &e;
    if (!reusable && (victim == nullptr || e.expires_ms < victim->expires_ms)) victim = &e;
  }
  CounterEntry* slot = found;
  if (slot != nullptr && slot->expires_ms <= now_ms) {
    slot->window_start_ms = slot->locked_until_ms = slot->expires_ms = 0;
    slot->count = slot->strikes = 0;
  }
  if (slot == nullptr) {
    slot = free_slot != nullptr ? free_slot : victim;
    if (free_slot == nullptr) ++header().evictions;
    std::memset(slot, 0, sizeof *slot);
    std::memcpy(slot->digest, digest, 16);
  }
  change(*slot);
}

CounterEntry SharedCounterTable::read(std::string_view key, int64_t now_ms) {
  CounterEntry copy{};
  unsigned char digest[16];
  digest_of(key, digest);
  uint64_t home = 0;
  std::memcpy(&home, digest, sizeof home);
  const uint32_t cap = header().capacity;
  const CounterEntry* table = entries();
  TableLock lock(header().mutex);
  for (uint32_t i = 0; i < kProbeWindow; ++i) {
    const CounterEntry& e = table[(home + i) % cap];
    if (std::memcmp(e.digest, digest, 16) == 0) {
      if (e.expires_ms > now_ms) copy = e;
      break;
    }
  }
  return copy;
}

}  // namespace usersd
