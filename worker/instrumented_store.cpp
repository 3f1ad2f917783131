#include "worker/instrumented_store.hpp"

#include <chrono>
#include <type_traits>

namespace usersd {
namespace {

using metrics::StoreOp;
using Clock = std::chrono::steady_clock;

class InstrumentedStore final : public UserStore {
 public:
  InstrumentedStore(std::unique_ptr<UserStore> inner, WorkerMetrics& metrics)
      : inner_(std::move(inner)), metrics_(metrics) {}

  Result<User> create(const User& user) override { return timed(StoreOp::create, [&] { return inner_->create(user); }); }
  Result<User> find_by_id(std::string_view id) override {
    return timed(StoreOp::find_by_id, [&] { return inner_->find_by_id(id); });
  }
  Result<User> find_by_email(std::string_view email) override {
    return timed(StoreOp::find_by_email, [&] { return inner_->find_by_email(email); });
  }
  Result<User> find_by_user_name(std::string_view user_name) override {
    return timed(StoreOp::find_by_user_name, [&] { return inner_->find_by_user_name(user_name); });
  }
  Result<UserPage> list(const PageRequest& page) override { return timed(StoreOp::list, [&] { return inner_->list(page); }); }
  Result<User> update(const User& user) override { return timed(StoreOp::update, [&] { return inner_->update(user); }); }
  Result<User> put(const User& user) override { return timed(StoreOp::put, [&] { return inner_->put(user); }); }
  Status remove(std::string_view id, std::optional<int64_t> expected_version) override {
    return timed(StoreOp::remove, [&] { return inner_->remove(id, expected_version); });
  }
  Status ping() override { return timed(StoreOp::ping, [&] { return inner_->ping(); }); }
  std::string describe() const override { return inner_->describe(); }

 private:
  template <class Call>
  std::invoke_result_t<Call&> timed(StoreOp op, Call&& call) {
    const auto started = Clock::now();
    auto result = call();
    // Only an unreachable store is an error here; not found, conflict and stale versions are answers.
    const bool unavailable = !result.ok() && result.error().code == Errc::unavailable;
    metrics_.record_store(op, Clock::now() - started, unavailable);
    return result;
  }

  std::unique_ptr<UserStore> inner_;
  WorkerMetrics& metrics_;
};

}  // namespace

std::unique_ptr<UserStore> instrument_store(std::unique_ptr<UserStore> store, WorkerMetrics& metrics) {
  return std::make_unique<InstrumentedStore>(std::move(store), metrics);
}

}  // namespace usersd
