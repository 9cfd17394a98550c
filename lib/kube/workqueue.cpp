#include "kube/workqueue.h"

#include <algorithm>
#include <cmath>

namespace ferry::kube {

RateLimiter::RateLimiter(Clock& clock, Options options)
    : clock_(clock), options_(options), tokens_(options.burst), last_(clock.now()) {}

Clock::duration RateLimiter::when(const std::string& key) {
  int failures = failures_[key]++;
  double exp = static_cast<double>(options_.base.count()) * std::pow(2.0, failures);
  auto per_item = std::chrono::milliseconds(
      static_cast<int64_t>(std::min(exp, static_cast<double>(options_.cap.count()))));

  // Token bucket: refill by elapsed time, take one token, wait if in debt.
  auto now = clock_.now();
  double elapsed = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  tokens_ = std::min<double>(options_.burst, tokens_ + elapsed * options_.qps);
  tokens_ -= 1;
  Clock::duration bucket{0};
  if (tokens_ < 0) {
    bucket = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(-tokens_ / options_.qps));
  }
  return std::max<Clock::duration>(per_item, bucket);
}

void RateLimiter::forget(const std::string& key) {
  failures_.erase(key);
}

int RateLimiter::num_requeues(const std::string& key) const {
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

WorkQueue::WorkQueue(Clock& clock, RateLimiter::Options limits, WorkQueueMetrics metrics)
    : clock_(clock), metrics_(std::move(metrics)), limiter_(clock, limits) {}

void WorkQueue::add_locked(const std::string& key, std::unique_lock<std::mutex>& lock) {
  if (shutting_down_ || dirty_.contains(key)) return;
  dirty_.insert(key);
  added_at_.emplace(key, clock_.now());
  if (processing_.contains(key)) return;  // requeued by done()
  queue_.push_back(key);
  size_t depth = queue_.size();
  cv_.notify_one();
  lock.unlock();
  if (metrics_.add) metrics_.add();
  if (metrics_.depth) metrics_.depth(depth);
  lock.lock();
}

void WorkQueue::add(const std::string& key) {
  std::unique_lock lock(mu_);
  add_locked(key, lock);
}

void WorkQueue::add_after(const std::string& key, Clock::duration delay) {
  std::unique_lock lock(mu_);
  if (shutting_down_) return;
  if (delay <= Clock::duration::zero()) {
    add_locked(key, lock);
    return;
  }
  auto ready = clock_.now() + delay;
  if (auto it = waiting_at_.find(key); it != waiting_at_.end()) {
    if (it->second <= ready) return;  // an earlier add is already pending
    auto range = waiting_.equal_range(it->second);
    for (auto w = range.first; w != range.second; ++w) {
      if (w->second == key) {
        waiting_.erase(w);
        break;
      }
    }
  }
  waiting_.emplace(ready, key);
  waiting_at_[key] = ready;
  cv_.notify_all();
}

void WorkQueue::add_rate_limited(const std::string& key) {
  Clock::duration delay;
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return;
    delay = limiter_.when(key);
  }
  if (metrics_.retry) metrics_.retry();
  add_after(key, delay);
}

void WorkQueue::forget(const std::string& key) {
  std::lock_guard lock(mu_);
  limiter_.forget(key);
}

int WorkQueue::num_requeues(const std::string& key) {
  std::lock_guard lock(mu_);
  return limiter_.num_requeues(key);
}

void WorkQueue::promote_waiting_locked() {
  auto now = clock_.now();
  while (!waiting_.empty() && waiting_.begin()->first <= now) {
    std::string key = waiting_.begin()->second;
    waiting_.erase(waiting_.begin());
    waiting_at_.erase(key);
    if (dirty_.contains(key)) continue;
    dirty_.insert(key);
    added_at_.emplace(key, now);
    if (!processing_.contains(key)) queue_.push_back(key);
  }
}

std::optional<std::string> WorkQueue::get() {
  return get_impl(std::nullopt);
}

std::optional<std::string> WorkQueue::get_until(Clock::time_point deadline) {
  return get_impl(deadline);
}

std::optional<std::string> WorkQueue::get_impl(std::optional<Clock::time_point> deadline) {
  std::unique_lock lock(mu_);
  for (;;) {
    promote_waiting_locked();
    if (!queue_.empty()) break;
    if (shutting_down_) return std::nullopt;
    auto now = clock_.now();
    if (deadline && now >= *deadline) return std::nullopt;
    auto wake = deadline.value_or(Clock::time_point::max());
    if (!waiting_.empty()) wake = std::min(wake, waiting_.begin()->first);
    if (wake == Clock::time_point::max()) {
      wake = now + std::chrono::hours(1);  // re-check now and then
    }
    clock_.wait_until(cv_, lock, wake);
  }
  std::string key = queue_.front();
  queue_.pop_front();
  dirty_.erase(key);
  auto now = clock_.now();
  processing_[key] = now;
  std::chrono::duration<double> latency{0};
  if (auto it = added_at_.find(key); it != added_at_.end()) {
    latency = now - it->second;
    added_at_.erase(it);
  }
  size_t depth = queue_.size();
  lock.unlock();
  if (metrics_.queue_latency) metrics_.queue_latency(latency);
  if (metrics_.depth) metrics_.depth(depth);
  return key;
}

void WorkQueue::done(const std::string& key) {
  std::unique_lock lock(mu_);
  auto it = processing_.find(key);
  if (it == processing_.end()) return;
  std::chrono::duration<double> took = clock_.now() - it->second;
  processing_.erase(it);
  if (dirty_.contains(key)) {
    queue_.push_back(key);
  }
  cv_.notify_all();
  lock.unlock();
  if (metrics_.work_duration) metrics_.work_duration(took);
}

void WorkQueue::shut_down() {
  std::lock_guard lock(mu_);
  shutting_down_ = true;
  waiting_.clear();
  waiting_at_.clear();
  cv_.notify_all();
}

void WorkQueue::shut_down_with_drain() {
  std::unique_lock lock(mu_);
  shutting_down_ = true;
  waiting_.clear();
  waiting_at_.clear();
  cv_.notify_all();
  while (!processing_.empty() || !queue_.empty()) {
    clock_.wait_until(cv_, lock, clock_.now() + std::chrono::milliseconds(100));
  }
}

bool WorkQueue::shutting_down() {
  std::lock_guard lock(mu_);
  return shutting_down_;
}

size_t WorkQueue::len() {
  std::lock_guard lock(mu_);
  promote_waiting_locked();
  return queue_.size();
}

}  // namespace ferry::kube
