// The end of every request: its access log line (unless log.access is false) and its metrics.
#pragma once

#include <httplib.h>

#include <unordered_map>

#include "worker/app.hpp"
#include "worker/router.hpp"

namespace usersd {

class AccessLog {
 public:
  // Registers the router's route templates in this worker's metrics slot.
  AccessLog(App& app, const Router& router);
  // Called by httplib once the response is written (also for responses httplib made itself).
  void finish(const httplib::Request& req, const httplib::Response& res);

 private:
  App& app_;
  std::unordered_map<const Route*, int> route_index_;  // into the metrics slot's route table
};

}  // namespace usersd
