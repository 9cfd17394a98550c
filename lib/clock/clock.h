// Time as an injectable dependency (CONVENTIONS.md rule 7). Everything that
// waits, backs off or expires asks a Clock, so unit tests drive time with a
// FakeClock and stay deterministic, with no sleeps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace ferry {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  virtual ~Clock() = default;

  virtual time_point now() const = 0;
  // Blocks on `cv` (whose mutex `lock` holds) until notified or until this
  // clock reaches `deadline`. May return early; callers re-check.
  virtual void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                          time_point deadline) = 0;
};

class RealClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                  time_point deadline) override {
    cv.wait_until(lock, deadline);
  }
  static RealClock& instance() {
    static RealClock clock;
    return clock;
  }
};

// Time moves only when a test calls advance(). Waiters poll briefly in real
// time and re-check, so a blocked wait_until notices an advance.
class FakeClock final : public Clock {
 public:
  time_point now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  void advance(duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
  }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                  time_point /*deadline*/) override {
    cv.wait_for(lock, std::chrono::milliseconds(1));
  }

 private:
  mutable std::mutex mu_;
  time_point now_{std::chrono::hours(1)};  // guarded by mu_
};

}  // namespace ferry
