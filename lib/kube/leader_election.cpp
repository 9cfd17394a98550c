#include "kube/leader_election.h"

#include <ctime>
#include <thread>

#include "kube/event_recorder.h"

namespace ferry::kube {

LeaderElector::LeaderElector(Client& client, LeaderElectionConfig config, Clock& clock)
    : client_(client), config_(std::move(config)), clock_(clock) {}

Clock::time_point LeaderElector::last_renew() const {
  return Clock::time_point(Clock::duration(last_renew_.load()));
}

bool LeaderElector::try_acquire_or_renew() {
  const auto now = clock_.now();
  const auto& type = resources::kLeases;
  auto lease = client_.get(type, config_.lease_namespace, config_.lease_name);
  const std::string stamp = micro_time_now();
  const int duration_s = static_cast<int>(
      std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count());
  if (!lease.ok()) {
    if (lease.status().code() != Code::kNotFound) return false;
    json fresh = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec",
         {{"holderIdentity", config_.identity},
          {"leaseDurationSeconds", duration_s},
          {"acquireTime", stamp},
          {"renewTime", stamp},
          {"leaseTransitions", 0}}}};
    auto created = client_.create(type, config_.lease_namespace, fresh);
    if (!created.ok()) return false;
    observed_spec_ = (*created)["spec"];
    observed_time_ = now;
    return true;
  }
  json spec = (*lease).value("spec", json::object());
  if (spec != observed_spec_) {  // the record moved: restart our expiry clock
    observed_spec_ = spec;
    observed_time_ = now;
  }
  const std::string holder = spec.value("holderIdentity", "");
  if (holder != last_seen_holder_) {
    last_seen_holder_ = holder;
    if (config_.on_new_leader && !holder.empty()) config_.on_new_leader(holder);
  }
  const auto their_duration = std::chrono::seconds(spec.value("leaseDurationSeconds", duration_s));
  const bool held_by_other = !holder.empty() && holder != config_.identity;
  if (held_by_other && observed_time_ + their_duration > now) return false;

  json next = *lease;
  next["spec"]["holderIdentity"] = config_.identity;
  next["spec"]["leaseDurationSeconds"] = duration_s;
  next["spec"]["renewTime"] = stamp;
  if (holder != config_.identity) {
    next["spec"]["acquireTime"] = stamp;
    next["spec"]["leaseTransitions"] = spec.value("leaseTransitions", 0) + 1;
  }
  // A conditional update (resourceVersion): of two contenders one wins.
  auto updated = client_.update(type, config_.lease_namespace, next);
  if (!updated.ok()) return false;
  observed_spec_ = (*updated)["spec"];
  observed_time_ = now;
  return true;
}

void LeaderElector::release() {
  auto lease = client_.get(resources::kLeases, config_.lease_namespace, config_.lease_name);
  if (!lease.ok() || (*lease)["spec"].value("holderIdentity", "") != config_.identity) return;
  json next = *lease;
  next["spec"]["holderIdentity"] = "";
  next["spec"]["leaseDurationSeconds"] = 1;
  next["spec"]["renewTime"] = micro_time_now();
  (void)client_.update(resources::kLeases, config_.lease_namespace, next);
}

void LeaderElector::sleep(std::stop_token stop, Clock::duration d) {
  std::mutex mu;
  std::condition_variable cv;
  std::stop_callback wake(stop, [&] { cv.notify_all(); });
  std::unique_lock lock(mu);
  auto until = clock_.now() + d;
  while (!stop.stop_requested() && clock_.now() < until) clock_.wait_until(cv, lock, until);
}

void LeaderElector::run(std::stop_token stop) {
  // Campaign.
  while (!stop.stop_requested()) {
    if (try_acquire_or_renew()) break;
    sleep(stop, config_.retry_period);
  }
  if (stop.stop_requested()) return;
  last_renew_ = clock_.now().time_since_epoch().count();
  leading_ = true;

  std::stop_source work_stop;
  std::jthread work;
  if (config_.on_started_leading) {
    work =
        std::jthread([this, token = work_stop.get_token()] { config_.on_started_leading(token); });
  }
  // Watchdog: a renew call can block (an API server that accepts but does
  // not answer); the work must stop at last_renew + renew_deadline anyway,
  // which is before the lease can expire for anyone else.
  std::jthread watchdog([this, &work_stop](std::stop_token wd_stop) {
    while (!wd_stop.stop_requested() && !work_stop.stop_requested()) {
      auto deadline = last_renew() + config_.renew_deadline;
      if (clock_.now() >= deadline) {
        leading_ = false;
        work_stop.request_stop();
        return;
      }
      sleep(wd_stop,
            std::min<Clock::duration>(deadline - clock_.now(), std::chrono::milliseconds(50)));
    }
  });
  // Renew until we cannot for renew_deadline, or until asked to stop.
  while (!stop.stop_requested() && !work_stop.stop_requested()) {
    sleep(stop, config_.retry_period);
    if (stop.stop_requested()) break;
    if (try_acquire_or_renew()) {
      last_renew_ = clock_.now().time_since_epoch().count();
      continue;
    }
    if (clock_.now() - last_renew() >= config_.renew_deadline) break;  // lost
  }
  // Stop the work first: nothing may run once we may no longer be leader.
  leading_ = false;
  work_stop.request_stop();
  watchdog.request_stop();
  watchdog.join();
  if (work.joinable()) work.join();
  if (config_.on_stopped_leading) config_.on_stopped_leading();
  if (stop.stop_requested() && config_.release_on_stop) release();
}

}  // namespace ferry::kube
