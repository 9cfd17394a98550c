// What the source agent binds a snapshot to (binding_for): a bare pod's
// snapshot to the replacement the operator created, an owned pod's to its
// namespace only (ReplicaSet) or its fixed name (StatefulSet), the rest left
// to the target agent's grant. And when the agent treats a Migration as
// rolling back (rolling_back): once an owned source is deleted, only a
// failure can end it, a cancel no longer does.
#include <gtest/gtest.h>

#include "controller/agent_controller.h"

namespace ferry::agent {
namespace {

using api::Phase;

api::Migration migration(const std::string& owner_kind, const std::string& owner_uid) {
  api::Migration m;
  m.ns = "shop";
  m.name = "m-web";
  m.uid = "mig-uid";
  m.spec.pod_name = "web-0";
  m.status.phase = Phase::kCheckpointing;
  m.status.source_pod_uid = "source-uid";
  m.status.owner_kind = owner_kind;
  m.status.owner_name = owner_kind.empty() ? "" : "web";
  m.status.owner_uid = owner_uid;
  if (owner_kind.empty()) {  // the operator created the replacement up front
    m.status.target_pod = "web-0-ferry-1a2b";
    m.status.target_pod_uid = "target-uid";
  }
  return m;
}

TEST(BindingForTest, ABarePodsSnapshotIsBoundToTheReplacementTheOperatorCreated) {
  store::Binding b = binding_for(migration("", ""), "app");
  EXPECT_EQ(b, (store::Binding{.namespace_name = "shop",
                               .pod_name = "web-0-ferry-1a2b",
                               .pod_uid = "target-uid",
                               .container_name = "app",
                               .migration_uid = "mig-uid"}));
}

TEST(BindingForTest, AReplicaSetPodsSnapshotWaitsForAGrant) {
  store::Binding b = binding_for(migration("ReplicaSet", "rs-uid"), "sidecar");
  EXPECT_EQ(b, (store::Binding{.namespace_name = "shop",
                               .pod_name = "",
                               .pod_uid = "",
                               .container_name = "sidecar",
                               .migration_uid = "mig-uid"}));
}

TEST(BindingForTest, AStatefulSetPodsSnapshotKeepsItsNameAndWaitsForTheUid) {
  api::Migration m = migration("StatefulSet", "sts-uid");
  m.status.target_pod = "ignored";  // never trusted for an owned pod
  m.status.target_pod_uid = "ignored-uid";
  store::Binding b = binding_for(m, "app");
  EXPECT_EQ(b, (store::Binding{.namespace_name = "shop",
                               .pod_name = "web-0",
                               .pod_uid = "",
                               .container_name = "app",
                               .migration_uid = "mig-uid"}));
}

api::Condition condition(const std::string& type, const std::string& status) {
  return {.type = type,
          .status = status,
          .reason = "Test",
          .message = "",
          .observed_generation = 1,
          .last_transition_time = "2026-01-01T00:00:00.000Z"};
}

TEST(RollingBackTest, CancelDeletionFailureOrTheConditionBeforeTheSourceIsDeleted) {
  api::Migration m = migration("ReplicaSet", "rs-uid");
  EXPECT_FALSE(rolling_back(m));
  m.spec.cancel = true;
  EXPECT_TRUE(rolling_back(m));
  m = migration("ReplicaSet", "rs-uid");
  m.deleting = true;
  EXPECT_TRUE(rolling_back(m));
  m = migration("ReplicaSet", "rs-uid");
  m.status.failure_reason = "CheckpointFailed";
  EXPECT_TRUE(rolling_back(m));
  m = migration("ReplicaSet", "rs-uid");
  m.status.conditions = {condition("RollingBack", "True")};
  EXPECT_TRUE(rolling_back(m));
  m.status.conditions = {condition("RollingBack", "False")};
  EXPECT_FALSE(rolling_back(m));
  m.status.conditions = {condition("SourceDeleted", "False")};
  m.spec.cancel = true;
  EXPECT_TRUE(rolling_back(m)) << "SourceDeleted False: nothing is lost yet";
}

TEST(RollingBackTest, OnceTheOwnedSourceIsDeletedOnlyAFailureRollsBack) {
  api::Migration m = migration("ReplicaSet", "rs-uid");
  m.status.phase = Phase::kRestoring;
  m.status.conditions = {condition("SourceDeleted", "True")};
  EXPECT_FALSE(rolling_back(m));
  m.spec.cancel = true;
  EXPECT_FALSE(rolling_back(m)) << "a cancel can no longer undo the deletion";
  m.deleting = true;
  EXPECT_FALSE(rolling_back(m));
  m.status.conditions.push_back(condition("RollingBack", "True"));
  EXPECT_FALSE(rolling_back(m));
  m.status.failure_reason = "RestoreFailed";
  EXPECT_TRUE(rolling_back(m));
}

TEST(RollingBackTest, NeverAfterTheSwitchOrOnceFinal) {
  for (Phase phase : {Phase::kSwitching, Phase::kSucceeded, Phase::kFailed, Phase::kRolledBack}) {
    api::Migration m = migration("", "");
    m.status.phase = phase;
    m.spec.cancel = true;
    m.status.failure_reason = "RestoreFailed";
    EXPECT_FALSE(rolling_back(m)) << api::phase_name(phase);
  }
}

}  // namespace
}  // namespace ferry::agent
