// The worker's connection threads: httplib's ThreadPool plus one signal it lacks. With one thread per
// connection, idle keep-alive connections would hold every thread while new connections wait in the
// queue; pressure_fd() is readable while a connection waits for a thread, and an idle keep-alive
// connection seeing it closes, giving its thread up (nginx reuses idle keep-alive connections the same way).
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace usersd {

class TaskPool final : public httplib::TaskQueue {
 public:
  explicit TaskPool(size_t threads);
  ~TaskPool() override;
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  int pressure_fd() const { return pressure_fd_; }

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  size_t idle_threads_ = 0;
  bool under_pressure_ = false;  // pressure_fd_ is readable
  bool shutting_down_ = false;
  int pressure_fd_ = -1;
  std::vector<std::thread> threads_;
};

}  // namespace usersd
