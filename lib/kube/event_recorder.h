// Records events.k8s.io/v1 Events about objects, so `kubectl describe` and
// `kubectl events` show what Ferry did and why. Repeats of the same event
// (same object, type, reason, action and note) within the aggregation window
// are folded into one Event whose `series` counts them, instead of flooding
// the API server: one Event per distinct occurrence, as client-go's
// events.k8s.io recorder does. Failures to record are logged, never fatal.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "clock/clock.h"
#include "kube/client.h"

namespace ferry::kube {

struct EventRecorderOptions {
  std::string reporting_controller;  // e.g. "ferry.dev/operator"
  std::string reporting_instance;    // e.g. the pod name
  std::chrono::seconds aggregation_window{std::chrono::minutes(6)};
};

class EventRecorder {
 public:
  EventRecorder(Client& client, EventRecorderOptions options, Clock& clock = RealClock::instance());

  // type: "Normal" or "Warning"; reason: CamelCase; action: what was done.
  Status record(const json& regarding, const std::string& type, const std::string& reason,
                const std::string& action, const std::string& note);

 private:
  struct Seen {
    std::string name;
    std::string ns;
    int count = 1;
    Clock::time_point last;
  };
  Client& client_;
  const EventRecorderOptions options_;
  Clock& clock_;
  std::mutex mu_;
  std::map<std::string, Seen> seen_;  // guarded by mu_
};

// RFC 3339 timestamp of "now" with microseconds (the MicroTime format).
std::string micro_time_now();

}  // namespace ferry::kube
