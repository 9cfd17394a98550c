// The Migration metrics of DESIGN.md §7, fed by the operator when a
// Migration reaches a final phase and after each reconcile: migrations by
// result, phase durations and freeze time (histograms, from the status the
// agents wrote), bytes checkpointed, reconcile totals and latency, webhook
// decisions. The
// gauge of Migrations by phase is refreshed by the caller (set_phase_counts).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <map>
#include <string>

#include "api/migration.h"

namespace ferry::obs {

class MigrationMetrics {
 public:
  explicit MigrationMetrics(prometheus::Registry& registry);

  void observe_final(const api::MigrationStatus& status, const std::string& mode);
  void observe_reconcile(bool ok, std::chrono::duration<double> latency);
  void set_phase_counts(const std::map<std::string, int>& counts);
  void observe_webhook(const std::string& webhook, const std::string& decision);

 private:
  prometheus::Family<prometheus::Counter>& migrations_;
  prometheus::Family<prometheus::Histogram>& phase_duration_;
  prometheus::Family<prometheus::Histogram>& freeze_;
  prometheus::Family<prometheus::Histogram>& total_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Counter>& reconciles_;
  prometheus::Family<prometheus::Histogram>& reconcile_latency_;
  prometheus::Family<prometheus::Gauge>& in_phase_;
  prometheus::Family<prometheus::Counter>& webhook_decisions_;
};

// "1.234s" -> 1.234; nullopt for anything else.
std::optional<double> parse_seconds(const std::string& duration);

}  // namespace ferry::obs
