// Leader election on a coordination.k8s.io/v1 Lease, with client-go's
// algorithm, so that of the operator's replicas exactly one does the work.
// Expiry is judged by when *this* process last saw the lease record change,
// on its own monotonic clock, never by comparing the holder's wall-clock
// timestamps with ours: clock skew between nodes cannot make two leaders.
// A leader that fails to renew for renew_deadline (shorter than the lease
// duration) stops its work before others may take over; on shutdown the
// lease is released so a successor need not wait for it to expire.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>

#include "clock/clock.h"
#include "kube/client.h"

namespace ferry::kube {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name;
  std::string identity;  // unique per replica, e.g. the pod name
  std::chrono::milliseconds lease_duration{std::chrono::seconds(15)};
  std::chrono::milliseconds renew_deadline{std::chrono::seconds(10)};
  std::chrono::milliseconds retry_period{std::chrono::seconds(2)};
  // Runs on its own thread while this replica leads; its stop_token is
  // requested the moment leadership is lost or the elector stops. It must
  // return promptly once stop is requested.
  std::function<void(std::stop_token)> on_started_leading;
  // Called after on_started_leading has returned.
  std::function<void()> on_stopped_leading;
  std::function<void(const std::string& identity)> on_new_leader;
  bool release_on_stop = true;
};

class LeaderElector {
 public:
  LeaderElector(Client& client, LeaderElectionConfig config, Clock& clock = RealClock::instance());

  // Campaigns, leads, and returns when leadership is lost or `stop` is
  // requested. Call again to campaign anew.
  void run(std::stop_token stop);
  bool is_leader() const { return leading_.load(); }
  // Monotonic time of the last successful acquire or renew.
  Clock::time_point last_renew() const;

 private:
  // True when this replica holds the lease after the attempt.
  bool try_acquire_or_renew();
  void release();
  void sleep(std::stop_token stop, Clock::duration d);

  Client& client_;
  const LeaderElectionConfig config_;
  Clock& clock_;
  std::atomic<bool> leading_{false};
  std::atomic<Clock::time_point::rep> last_renew_{0};
  json observed_spec_;  // elector thread only
  Clock::time_point observed_time_{};
  std::string last_seen_holder_;
};

}  // namespace ferry::kube
