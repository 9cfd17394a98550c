#include "obs/kube_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

namespace ferry::obs {
namespace {

std::string scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(KubeMetricsTest, RequestsCountedByVerbAndCode) {
  prometheus::Registry registry;
  KubeMetrics metrics(registry);
  auto hook = metrics.request_hook();
  hook({"get", 200, std::chrono::milliseconds(3)});
  hook({"get", 200, std::chrono::milliseconds(4)});
  hook({"update", 409, std::chrono::milliseconds(2)});
  hook({"watch", 200, std::chrono::seconds(300)});
  std::string text = scrape(registry);
  EXPECT_NE(text.find("ferry_kube_requests_total{code=\"200\",verb=\"get\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find("ferry_kube_requests_total{code=\"409\",verb=\"update\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("ferry_kube_request_duration_seconds_count{verb=\"get\"} 2"),
            std::string::npos);
  EXPECT_EQ(text.find("ferry_kube_request_duration_seconds_count{verb=\"watch\"}"),
            std::string::npos)
      << "watch durations are not request latencies";
}

TEST(KubeMetricsTest, WorkQueueHooksFeedTheMetrics) {
  prometheus::Registry registry;
  KubeMetrics metrics(registry);
  FakeClock clock;
  kube::WorkQueue q(clock, {}, metrics.queue_hooks("migrations"));
  q.add("a");
  q.add("b");
  clock.advance(std::chrono::seconds(1));
  auto key = q.get_until(clock.now());
  ASSERT_TRUE(key);
  q.done(*key);
  q.add_rate_limited("a");
  std::string text = scrape(registry);
  EXPECT_NE(text.find("ferry_workqueue_adds_total{name=\"migrations\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find("ferry_workqueue_depth{name=\"migrations\"} 1"), std::string::npos);
  EXPECT_NE(text.find("ferry_workqueue_queue_duration_seconds_sum{name=\"migrations\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("ferry_workqueue_retries_total{name=\"migrations\"} 1"), std::string::npos);
}

}  // namespace
}  // namespace ferry::obs
