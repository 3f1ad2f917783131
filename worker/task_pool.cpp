#include "worker/task_pool.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace usersd {

TaskPool::TaskPool(size_t threads) : pressure_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

TaskPool::~TaskPool() {
  if (pressure_fd_ >= 0) ::close(pressure_fd_);
}

void TaskPool::enqueue(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(fn));
    if (idle_threads_ < jobs_.size() && !under_pressure_) {
      under_pressure_ = true;
      const uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(pressure_fd_, &one, sizeof one);
    }
  }
  wake_.notify_one();
}

void TaskPool::shutdown() {
  {
    std::lock_guard lock(mutex_);
    shutting_down_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void TaskPool::run() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      ++idle_threads_;
      wake_.wait(lock, [this] { return !jobs_.empty() || shutting_down_; });
      --idle_threads_;
      if (jobs_.empty()) return;  // shutting down with nothing left to do
      job = std::move(jobs_.front());
      jobs_.pop_front();
      if (jobs_.empty() && under_pressure_) {
        under_pressure_ = false;
        uint64_t count = 0;
        [[maybe_unused]] auto n = ::read(pressure_fd_, &count, sizeof count);
      }
    }
    job();
  }
}

}  // namespace usersd
