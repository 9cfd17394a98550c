#include "obs/migration_metrics.h"

#include <cstdlib>

namespace ferry::obs {
namespace {

prometheus::Histogram::BucketBoundaries seconds_buckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300};
}

}  // namespace

std::optional<double> parse_seconds(const std::string& duration) {
  if (duration.size() < 2 || duration.back() != 's') return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(duration.c_str(), &end);
  if (end != duration.c_str() + duration.size() - 1) return std::nullopt;
  return v;
}

MigrationMetrics::MigrationMetrics(prometheus::Registry& registry)
    : migrations_(prometheus::BuildCounter()
                      .Name("ferry_migrations_total")
                      .Help("Migrations that reached a final phase, by result and mode.")
                      .Register(registry)),
      phase_duration_(prometheus::BuildHistogram()
                          .Name("ferry_migration_phase_duration_seconds")
                          .Help("Time spent in each phase of finished Migrations.")
                          .Register(registry)),
      freeze_(prometheus::BuildHistogram()
                  .Name("ferry_migration_freeze_seconds")
                  .Help("Time to freeze the source (cgroup freezer), per Migration.")
                  .Register(registry)),
      total_(prometheus::BuildHistogram()
                 .Name("ferry_migration_duration_seconds")
                 .Help("Whole Migration, from admission to its final phase, by result.")
                 .Register(registry)),
      bytes_(prometheus::BuildCounter()
                 .Name("ferry_migration_bytes_total")
                 .Help("Bytes of process state checkpointed and transferred.")
                 .Register(registry)),
      reconciles_(prometheus::BuildCounter()
                      .Name("ferry_reconcile_total")
                      .Help("Migration reconciles by result (error: retried with backoff).")
                      .Register(registry)),
      reconcile_latency_(prometheus::BuildHistogram()
                             .Name("ferry_reconcile_duration_seconds")
                             .Help("Time one Migration reconcile takes.")
                             .Register(registry)),
      in_phase_(prometheus::BuildGauge()
                    .Name("ferry_migrations")
                    .Help("Migrations known to the operator, by current phase.")
                    .Register(registry)),
      webhook_decisions_(prometheus::BuildCounter()
                             .Name("ferry_webhook_decisions_total")
                             .Help("Pod admission decisions by webhook (guard, steer) and "
                                   "decision (allowed, patched, denied).")
                             .Register(registry)) {
  set_phase_counts({});  // every phase at 0 from the first scrape on
}

void MigrationMetrics::observe_webhook(const std::string& webhook, const std::string& decision) {
  webhook_decisions_.Add({{"webhook", webhook}, {"decision", decision}}).Increment();
}

void MigrationMetrics::observe_final(const api::MigrationStatus& s, const std::string& mode) {
  const std::string result =
      s.phase ? std::string(api::phase_name(*s.phase)) : std::string("Unknown");
  migrations_.Add({{"result", result}, {"mode", mode}}).Increment();
  for (size_t i = 0; i + 1 < s.phase_transitions.size(); ++i) {
    auto a = api::parse_rfc3339(s.phase_transitions[i].time);
    auto b = api::parse_rfc3339(s.phase_transitions[i + 1].time);
    if (!a || !b) continue;
    phase_duration_
        .Add({{"phase", std::string(api::phase_name(s.phase_transitions[i].phase))}},
             seconds_buckets())
        .Observe(*b - *a);
  }
  if (auto f = parse_seconds(s.freeze)) freeze_.Add({}, seconds_buckets()).Observe(*f);
  if (auto t = parse_seconds(s.total)) {
    total_.Add({{"result", result}}, seconds_buckets()).Observe(*t);
  }
  bytes_.Add({{"kind", "checkpointed"}}).Increment(static_cast<double>(s.bytes_checkpointed));
  bytes_.Add({{"kind", "transferred"}}).Increment(static_cast<double>(s.bytes_transferred));
}

void MigrationMetrics::observe_reconcile(bool ok, std::chrono::duration<double> latency) {
  reconciles_.Add({{"result", ok ? "success" : "error"}}).Increment();
  reconcile_latency_.Add({}, seconds_buckets()).Observe(latency.count());
}

void MigrationMetrics::set_phase_counts(const std::map<std::string, int>& counts) {
  for (const char* phase : {"Pending", "Scheduling", "Checkpointing", "Transferring", "Restoring",
                            "Switching", "Succeeded", "Failed", "RolledBack"}) {
    auto it = counts.find(phase);
    in_phase_.Add({{"phase", phase}}).Set(it == counts.end() ? 0 : it->second);
  }
}

}  // namespace ferry::obs
