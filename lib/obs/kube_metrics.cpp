#include "obs/kube_metrics.h"

namespace ferry::obs {
namespace {

prometheus::Histogram::BucketBoundaries latency_buckets() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace

KubeMetrics::KubeMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("ferry_kube_requests_total")
                    .Help("Kubernetes API requests by verb and HTTP code (0: no response).")
                    .Register(registry)),
      request_latency_(prometheus::BuildHistogram()
                           .Name("ferry_kube_request_duration_seconds")
                           .Help("Kubernetes API request latency by verb.")
                           .Register(registry)),
      depth_(prometheus::BuildGauge()
                 .Name("ferry_workqueue_depth")
                 .Help("Keys waiting in the work queue.")
                 .Register(registry)),
      adds_(prometheus::BuildCounter()
                .Name("ferry_workqueue_adds_total")
                .Help("Keys added to the work queue.")
                .Register(registry)),
      queue_latency_(prometheus::BuildHistogram()
                         .Name("ferry_workqueue_queue_duration_seconds")
                         .Help("Time a key waits in the queue before a worker takes it.")
                         .Register(registry)),
      work_duration_(prometheus::BuildHistogram()
                         .Name("ferry_workqueue_work_duration_seconds")
                         .Help("Time a worker spends on a key.")
                         .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("ferry_workqueue_retries_total")
                   .Help("Rate-limited re-adds of failed keys.")
                   .Register(registry)) {}

std::function<void(const kube::RequestSample&)> KubeMetrics::request_hook() {
  return [this](const kube::RequestSample& s) {
    requests_.Add({{"verb", s.verb}, {"code", std::to_string(s.code)}}).Increment();
    // Watches are long-lived by design; their duration is not a latency.
    if (s.verb != "watch") {
      request_latency_.Add({{"verb", s.verb}}, latency_buckets()).Observe(s.latency.count());
    }
  };
}

kube::WorkQueueMetrics KubeMetrics::queue_hooks(const std::string& queue) {
  auto& depth = depth_.Add({{"name", queue}});
  auto& adds = adds_.Add({{"name", queue}});
  auto& latency = queue_latency_.Add({{"name", queue}}, latency_buckets());
  auto& work = work_duration_.Add({{"name", queue}}, latency_buckets());
  auto& retries = retries_.Add({{"name", queue}});
  return {.depth = [&depth](size_t d) { depth.Set(static_cast<double>(d)); },
          .add = [&adds] { adds.Increment(); },
          .queue_latency = [&latency](auto d) { latency.Observe(d.count()); },
          .work_duration = [&work](auto d) { work.Observe(d.count()); },
          .retry = [&retries] { retries.Increment(); }};
}

}  // namespace ferry::obs
