#include "kube/workqueue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

namespace ferry::kube {
namespace {

using namespace std::chrono_literals;

class WorkQueueTest : public ::testing::Test {
 protected:
  // Non-blocking get: what is ready right now, by the fake clock.
  std::optional<std::string> poll(WorkQueue& q) { return q.get_until(clock_.now()); }
  FakeClock clock_;
};

TEST_F(WorkQueueTest, DuplicateAddsCollapse) {
  WorkQueue q(clock_);
  q.add("a");
  q.add("b");
  q.add("a");
  EXPECT_EQ(q.len(), 2u);
  EXPECT_EQ(poll(q), "a");
  EXPECT_EQ(poll(q), "b");
  EXPECT_EQ(poll(q), std::nullopt);
}

TEST_F(WorkQueueTest, KeyInProcessingIsNotHandedOutTwice) {
  WorkQueue q(clock_);
  q.add("a");
  ASSERT_EQ(poll(q), "a");
  q.add("a");  // changed again while a worker holds it
  q.add("a");
  EXPECT_EQ(poll(q), std::nullopt) << "a second worker must not get a key in processing";
  q.done("a");
  EXPECT_EQ(poll(q), "a") << "re-added while processing: queued again, once, after done";
  q.done("a");
  EXPECT_EQ(poll(q), std::nullopt);
}

TEST_F(WorkQueueTest, DoneWithoutReAddDoesNotRequeue) {
  WorkQueue q(clock_);
  q.add("a");
  ASSERT_EQ(poll(q), "a");
  q.done("a");
  EXPECT_EQ(q.len(), 0u);
}

TEST_F(WorkQueueTest, RateLimitedAddsBackOffExponentially) {
  WorkQueue q(clock_, {.base = 5ms, .cap = 1000s, .qps = 1000, .burst = 1000});
  for (auto expected : {5ms, 10ms, 20ms, 40ms}) {
    q.add_rate_limited("a");
    clock_.advance(expected - 1ms);
    EXPECT_EQ(poll(q), std::nullopt) << "too early at " << expected.count() - 1 << "ms";
    clock_.advance(1ms);
    ASSERT_EQ(poll(q), "a") << "due at " << expected.count() << "ms";
    q.done("a");
  }
  EXPECT_EQ(q.num_requeues("a"), 4);
}

TEST_F(WorkQueueTest, BackoffIsCapped) {
  WorkQueue q(clock_, {.base = 5ms, .cap = 50ms, .qps = 1000, .burst = 1000});
  for (int i = 0; i < 20; ++i) {
    q.add_rate_limited("a");
    clock_.advance(50ms);
    ASSERT_EQ(poll(q), "a") << "attempt " << i;
    q.done("a");
  }
}

TEST_F(WorkQueueTest, ForgetResetsBackoff) {
  WorkQueue q(clock_, {.base = 5ms});
  q.add_rate_limited("a");
  q.add_rate_limited("a");
  EXPECT_EQ(q.num_requeues("a"), 2);
  q.forget("a");
  EXPECT_EQ(q.num_requeues("a"), 0);
  clock_.advance(10ms);
  ASSERT_EQ(poll(q), "a");
  q.done("a");
  q.add_rate_limited("a");
  clock_.advance(5ms);
  EXPECT_EQ(poll(q), "a") << "after forget the backoff starts again at the base delay";
}

TEST_F(WorkQueueTest, OverallTokenBucketLimitsAllKeys) {
  WorkQueue q(clock_, {.base = 1ms, .cap = 1000s, .qps = 1, .burst = 2});
  q.add_rate_limited("a");  // token 1
  q.add_rate_limited("b");  // token 2
  q.add_rate_limited("c");  // bucket empty: 1 s
  clock_.advance(1ms);
  std::set<std::string> got;
  while (auto k = poll(q)) got.insert(*k);
  EXPECT_EQ(got, (std::set<std::string>{"a", "b"}));
  clock_.advance(998ms);
  EXPECT_EQ(poll(q), std::nullopt);
  clock_.advance(1ms);
  EXPECT_EQ(poll(q), "c");
}

TEST_F(WorkQueueTest, AddAfterKeepsTheEarliestTime) {
  WorkQueue q(clock_);
  q.add_after("a", 100ms);
  q.add_after("a", 10ms);
  q.add_after("a", 50ms);
  clock_.advance(10ms);
  EXPECT_EQ(poll(q), "a");
  q.done("a");
  clock_.advance(100ms);
  EXPECT_EQ(poll(q), std::nullopt) << "the later adds were merged into the earliest";
}

TEST_F(WorkQueueTest, DelayedAddOfQueuedKeyCollapses) {
  WorkQueue q(clock_);
  q.add("a");
  q.add_after("a", 5ms);
  clock_.advance(5ms);
  EXPECT_EQ(q.len(), 1u);
}

TEST_F(WorkQueueTest, ShutDownHandsOutQueuedKeysThenStops) {
  WorkQueue q(clock_);
  q.add("a");
  q.add_after("later", 1s);
  q.shut_down();
  q.add("b");  // ignored
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(), std::nullopt);
  EXPECT_TRUE(q.shutting_down());
}

TEST_F(WorkQueueTest, BlockedGetWakesOnShutDown) {
  WorkQueue q(clock_);
  std::thread worker([&] { EXPECT_EQ(q.get(), std::nullopt); });
  q.shut_down();
  worker.join();
}

TEST_F(WorkQueueTest, ShutDownWithDrainWaitsForInFlightKeys) {
  WorkQueue q(clock_);
  q.add("a");
  ASSERT_EQ(q.get(), "a");
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    q.shut_down_with_drain();
    drained = true;
  });
  // The drainer cannot finish while "a" is in flight; done() releases it.
  while (!q.shutting_down()) std::this_thread::yield();
  EXPECT_FALSE(drained.load());
  q.done("a");
  drainer.join();
  EXPECT_TRUE(drained.load());
}

TEST_F(WorkQueueTest, MetricsObserveAddsDepthLatencyDurationRetries) {
  int adds = 0, retries = 0;
  size_t last_depth = 99;
  double latency = -1, duration = -1;
  WorkQueue q(clock_, {},
              {.depth = [&](size_t d) { last_depth = d; },
               .add = [&] { ++adds; },
               .queue_latency = [&](auto d) { latency = d.count(); },
               .work_duration = [&](auto d) { duration = d.count(); },
               .retry = [&] { ++retries; }});
  q.add("a");
  EXPECT_EQ(adds, 1);
  EXPECT_EQ(last_depth, 1u);
  clock_.advance(2s);
  ASSERT_EQ(poll(q), "a");
  EXPECT_EQ(last_depth, 0u);
  EXPECT_DOUBLE_EQ(latency, 2.0);
  clock_.advance(3s);
  q.done("a");
  EXPECT_DOUBLE_EQ(duration, 3.0);
  q.add_rate_limited("a");
  EXPECT_EQ(retries, 1);
}

TEST(WorkQueueConcurrencyTest, NoKeyIsProcessedByTwoWorkersAtOnce) {
  WorkQueue q;  // real clock
  std::mutex mu;
  std::set<std::string> in_flight;
  std::atomic<bool> overlap{false};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  workers.reserve(4);
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.get()) {
        {
          std::lock_guard lock(mu);
          if (!in_flight.insert(*key).second) overlap = true;
        }
        std::this_thread::yield();
        {
          std::lock_guard lock(mu);
          in_flight.erase(*key);
        }
        ++processed;
        q.done(*key);
      }
    });
  }
  for (int i = 0; i < 20000; ++i) q.add("k" + std::to_string(i % 7));
  q.shut_down_with_drain();
  for (auto& t : workers) t.join();
  EXPECT_FALSE(overlap.load());
  EXPECT_GT(processed.load(), 0);
}

}  // namespace
}  // namespace ferry::kube
