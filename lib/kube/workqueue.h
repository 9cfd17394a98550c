// A rate-limited work queue with client-go's semantics (util/workqueue), the
// heart of every Ferry controller:
//   - adding a key that is already queued does nothing (duplicates collapse);
//   - a key being processed is never handed to a second worker; if it is
//     added meanwhile, it is queued again once done() is called;
//   - add_rate_limited() re-adds after a per-key exponential backoff combined
//     with an overall token bucket; forget() resets the key's backoff;
//   - add_after() delays an add (requeueAfter);
//   - shut_down() stops new adds, and get() reports shutdown once the queue
//     is empty; shut_down_with_drain() also waits for in-flight keys.
// Time comes from an injected Clock, so tests are deterministic.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "clock/clock.h"

namespace ferry::kube {

// Per-key exponential backoff (base * 2^failures, capped) combined with an
// overall token bucket (qps, burst): the larger delay wins, as in client-go's
// DefaultControllerRateLimiter.
class RateLimiter {
 public:
  struct Options {
    std::chrono::milliseconds base{5};
    std::chrono::milliseconds cap{std::chrono::seconds(1000)};
    double qps = 10;
    int burst = 100;
  };
  RateLimiter(Clock& clock, Options options);
  // Delay before `key` may be retried; counts a failure for the key.
  Clock::duration when(const std::string& key);
  void forget(const std::string& key);
  int num_requeues(const std::string& key) const;

 private:
  Clock& clock_;
  Options options_;
  std::map<std::string, int> failures_;
  double tokens_;
  Clock::time_point last_;
};

// Observability hooks; all optional. Called with the queue's lock released.
struct WorkQueueMetrics {
  std::function<void(size_t depth)> depth;
  std::function<void()> add;
  std::function<void(std::chrono::duration<double>)> queue_latency;  // add -> get
  std::function<void(std::chrono::duration<double>)> work_duration;  // get -> done
  std::function<void()> retry;
};

class WorkQueue {
 public:
  explicit WorkQueue(Clock& clock = RealClock::instance(), RateLimiter::Options limits = {},
                     WorkQueueMetrics metrics = {});

  void add(const std::string& key);
  void add_after(const std::string& key, Clock::duration delay);
  void add_rate_limited(const std::string& key);
  void forget(const std::string& key);
  int num_requeues(const std::string& key);

  // Blocks until a key is ready; nullopt once shut down and empty.
  std::optional<std::string> get();
  // Like get(), but gives up at `deadline` (by the queue's clock).
  std::optional<std::string> get_until(Clock::time_point deadline);
  void done(const std::string& key);

  void shut_down();
  void shut_down_with_drain();
  bool shutting_down();
  size_t len();

 private:
  void add_locked(const std::string& key, std::unique_lock<std::mutex>& lock);
  void promote_waiting_locked();
  std::optional<std::string> get_impl(std::optional<Clock::time_point> deadline);

  Clock& clock_;
  WorkQueueMetrics metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;                        // guarded by mu_
  std::set<std::string> dirty_;                          // guarded by mu_: queued or to be requeued
  std::map<std::string, Clock::time_point> processing_;  // guarded by mu_: key -> get() time
  std::map<std::string, Clock::time_point> added_at_;    // guarded by mu_: for queue latency
  std::multimap<Clock::time_point, std::string> waiting_;  // guarded by mu_: delayed adds
  std::map<std::string, Clock::time_point> waiting_at_;    // guarded by mu_: key -> ready time
  RateLimiter limiter_;                                    // guarded by mu_
  bool shutting_down_ = false;                             // guarded by mu_
};

}  // namespace ferry::kube
