#include "api/migration.h"

#include <gtest/gtest.h>

namespace ferry::api {
namespace {

using nlohmann::json;

TEST(MigrationApiTest, PhasesAndFinality) {
  for (auto p : {Phase::kPending, Phase::kScheduling, Phase::kCheckpointing, Phase::kTransferring,
                 Phase::kRestoring, Phase::kSwitching, Phase::kSucceeded, Phase::kFailed,
                 Phase::kRolledBack}) {
    EXPECT_EQ(*parse_phase(phase_name(p)), p);
  }
  EXPECT_TRUE(is_final(Phase::kSucceeded));
  EXPECT_TRUE(is_final(Phase::kFailed));
  EXPECT_TRUE(is_final(Phase::kRolledBack));
  EXPECT_FALSE(is_final(Phase::kRestoring));
  EXPECT_EQ(parse_phase("Teleported").status().code(), Code::kInvalidArgument);
}

TEST(MigrationApiTest, DecodesWhatTheApiServerReturnsAndToleratesUnknownFields) {
  json obj = json::parse(R"({
    "apiVersion": "ferry.dev/v1alpha1", "kind": "Migration",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
                 "generation": 3, "somethingNew": true},
    "spec": {"podName": "web-0", "mode": "PostCopy", "timeouts": {"completionSeconds": 900},
             "cancel": true, "futureField": 1},
    "status": {"observedGeneration": 2, "phase": "Restoring", "sourceNode": "n1",
               "targetNode": "n2", "targetPod": "web-0",
               "conditions": [{"type": "Ready", "status": "False", "reason": "Restoring",
                               "message": "restoring", "lastTransitionTime": "t0"}],
               "phaseTransitionTimestamps": [{"phase": "Pending", "time": "t0"}],
               "durations": {"freeze": "0.005s"}, "bytes": {"checkpointed": 10}}
  })");
  auto m = migration_from_json(obj);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->ns, "ns");
  EXPECT_EQ(m->generation, 3);
  EXPECT_EQ(m->spec.pod_name, "web-0");
  EXPECT_EQ(m->spec.mode, "PostCopy");
  EXPECT_EQ(m->spec.completion_seconds, 900);
  EXPECT_FALSE(m->spec.progress_seconds.has_value()) << "unset: resolved by the operator";
  EXPECT_TRUE(m->spec.cancel);
  EXPECT_EQ(m->status.phase, Phase::kRestoring);
  EXPECT_EQ(m->status.conditions.at(0).reason, "Restoring");
  EXPECT_EQ(m->status.freeze, "0.005s");
  EXPECT_EQ(m->status.bytes_checkpointed, 10);
  // Encoding what was decoded gives the same status back.
  auto again = migration_from_json(
      json{{"kind", "Migration"}, {"status", status_to_json(m->status)["status"]}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, m->status);
}

TEST(MigrationApiTest, RejectsWrongKindAndUnknownPhase) {
  EXPECT_FALSE(migration_from_json(json{{"kind", "Pod"}}).ok());
  EXPECT_FALSE(migration_from_json(json{{"status", {{"phase", "Warp"}}}}).ok());
  EXPECT_FALSE(migration_from_json(json::array()).ok());
}

TEST(MigrationApiTest, ConditionTransitionTimeMovesOnlyOnFlips) {
  std::vector<Condition> cs;
  EXPECT_TRUE(set_condition(cs, {"Ready", "False", "Checkpointing", "dumping"}, "t1"));
  EXPECT_EQ(cs[0].last_transition_time, "t1");
  EXPECT_TRUE(set_condition(cs, {"Ready", "False", "Restoring", "restoring"}, "t2"));
  EXPECT_EQ(cs[0].last_transition_time, "t1") << "same status: no transition";
  EXPECT_FALSE(set_condition(cs, {"Ready", "False", "Restoring", "restoring"}, "t3"))
      << "nothing changed: no status write needed";
  EXPECT_TRUE(set_condition(cs, {"Ready", "True", "Restored", "running on n2"}, "t4"));
  EXPECT_EQ(cs[0].last_transition_time, "t4");
  EXPECT_EQ(cs.size(), 1u);
  ASSERT_NE(find_condition(cs, "Ready"), nullptr);
  EXPECT_EQ(find_condition(cs, "Failed"), nullptr);
}

TEST(MigrationApiTest, DurationsFormat) {
  EXPECT_EQ(format_seconds(1.23456), "1.235s");
}

TEST(TimestampTest, RoundTripsWithMillisecondsAndRejectsGarbage) {
  auto t = parse_rfc3339("2026-11-26T13:00:01.250Z");
  ASSERT_TRUE(t.has_value());
  EXPECT_DOUBLE_EQ(*t, 1795698001.25);
  EXPECT_EQ(parse_rfc3339("2026-11-26T13:00:01Z"), 1795698001.0);
  EXPECT_EQ(parse_rfc3339("2026-11-26T13:00:01+00:00"), 1795698001.0);
  EXPECT_FALSE(parse_rfc3339("yesterday").has_value());
  EXPECT_FALSE(parse_rfc3339("2026-11-26T13:00:01+02:00").has_value()) << "UTC only";
  auto now = parse_rfc3339(rfc3339_now());
  ASSERT_TRUE(now.has_value());
  EXPECT_NEAR(*now, unix_now(), 1.0);
}

TEST(PhaseTest, EnterPhaseRecordsEachTransitionOnceAndEnteredFindsTheLast) {
  MigrationStatus s;
  enter_phase(s, Phase::kPending);
  enter_phase(s, Phase::kPending);
  enter_phase(s, Phase::kCheckpointing);
  ASSERT_EQ(s.phase_transitions.size(), 2u);
  EXPECT_EQ(s.phase, Phase::kCheckpointing);
  EXPECT_TRUE(entered(s, Phase::kCheckpointing).has_value());
  EXPECT_FALSE(entered(s, Phase::kRestoring).has_value());
}

TEST(MigrationCodecTest, DecodesDeletionFinalizersAndTargetPodUid) {
  nlohmann::json j = {{"kind", "Migration"},
                      {"metadata",
                       {{"name", "m"},
                        {"deletionTimestamp", "2026-11-26T13:00:01Z"},
                        {"finalizers", {"ferry.dev/snapshot"}}}},
                      {"spec", {{"podName", "p"}}},
                      {"status", {{"targetPod", "p-abcde"}, {"targetPodUID", "u-1"}}}};
  auto m = migration_from_json(j);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->deleting);
  EXPECT_EQ(m->finalizers, std::vector<std::string>{"ferry.dev/snapshot"});
  EXPECT_EQ(m->status.target_pod_uid, "u-1");
  EXPECT_EQ(status_to_json(m->status)["status"]["targetPodUID"], "u-1");
}

}  // namespace
}  // namespace ferry::api
