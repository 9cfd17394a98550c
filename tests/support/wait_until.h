// Polls a condition until it holds or a deadline passes: the one way tests
// wait for something to happen (never a fixed sleep).
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace ferry::testing {

inline bool wait_until(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30),
                       std::chrono::milliseconds poll = std::chrono::milliseconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace ferry::testing
