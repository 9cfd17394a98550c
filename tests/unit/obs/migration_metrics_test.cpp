// The Migration metrics: a finished Migration's status becomes counters
// and histograms under the names DESIGN.md §7 promises.
#include "obs/migration_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

namespace ferry::obs {
namespace {

std::string scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(MigrationMetricsTest, AFinishedMigrationFeedsResultPhaseFreezeAndBytes) {
  prometheus::Registry registry;
  MigrationMetrics metrics(registry);
  api::MigrationStatus s;
  s.phase = api::Phase::kSucceeded;
  s.phase_transitions = {{api::Phase::kPending, "2026-11-26T13:00:00.000Z"},
                         {api::Phase::kCheckpointing, "2026-11-26T13:00:00.500Z"},
                         {api::Phase::kSucceeded, "2026-11-26T13:00:03.000Z"}};
  s.freeze = "0.004s";
  s.total = "3.000s";
  s.bytes_checkpointed = 1024;
  metrics.observe_final(s, "Cold");
  metrics.observe_reconcile(false, std::chrono::milliseconds(3));
  metrics.set_phase_counts({{"Restoring", 2}});
  std::string text = scrape(registry);
  EXPECT_NE(text.find(R"(ferry_migrations_total{mode="Cold",result="Succeeded"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(ferry_migration_phase_duration_seconds_sum{phase="Checkpointing"} 2.5)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ferry_migration_freeze_seconds_sum 0.004"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(ferry_migration_bytes_total{kind="checkpointed"} 1024)"),
            std::string::npos);
  EXPECT_NE(text.find(R"(ferry_reconcile_total{result="error"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(ferry_migrations{phase="Restoring"} 2)"), std::string::npos);
  EXPECT_NE(text.find(R"(ferry_migrations{phase="Pending"} 0)"), std::string::npos);
}

TEST(MigrationMetricsTest, ParseSecondsTakesOnlyTheStatusFormat) {
  EXPECT_EQ(parse_seconds("1.250s"), 1.25);
  EXPECT_FALSE(parse_seconds("1.25").has_value());
  EXPECT_FALSE(parse_seconds("abc s").has_value());
  EXPECT_FALSE(parse_seconds("").has_value());
}

}  // namespace
}  // namespace ferry::obs
