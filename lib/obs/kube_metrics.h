// Prometheus metrics for lib/kube, registered on a prometheus-cpp registry:
// API requests by verb and code with latency, and work-queue depth, adds,
// queue latency, work duration and retries (the metric names follow
// client-go's, with the ferry_ prefix). lib/kube itself only exposes hooks,
// so it stays independent of the metrics library.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <string>

#include "kube/client.h"
#include "kube/workqueue.h"

namespace ferry::obs {

class KubeMetrics {
 public:
  explicit KubeMetrics(prometheus::Registry& registry);

  // For ClientOptions::on_request.
  std::function<void(const kube::RequestSample&)> request_hook();
  // For a WorkQueue named `queue` (label name="queue").
  kube::WorkQueueMetrics queue_hooks(const std::string& queue);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_latency_;
  prometheus::Family<prometheus::Gauge>& depth_;
  prometheus::Family<prometheus::Counter>& adds_;
  prometheus::Family<prometheus::Histogram>& queue_latency_;
  prometheus::Family<prometheus::Histogram>& work_duration_;
  prometheus::Family<prometheus::Counter>& retries_;
};

}  // namespace ferry::obs
