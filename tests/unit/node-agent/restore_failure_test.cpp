// How the target agent tells a failed restore (report it: roll back) from
// ferry-runc's "not published yet" refusal (wait) in kubelet's container
// status, and which pods carry Ferry's readiness gate.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "controller/agent_controller.h"
#include "store/snapshot_store.h"

namespace ferry::agent {
namespace {

using kube::json;

json waiting(const std::string& reason, const std::string& message) {
  return {{"status",
           {{"containerStatuses",
             {{{"name", "app"},
               {"state", {{"waiting", {{"reason", reason}, {"message", message}}}}}}}}}}};
}

TEST(RestoreFailureTest, FerryRuncErrorsAreFailuresExceptTheNotYetPublishedRefusal) {
  EXPECT_EQ(restore_failure(waiting("CreateContainerError",
                                    "failed to create containerd task: ferry-runc: restore of "
                                    "container abc refused: snapshot m/app: checksum mismatch")),
            "app: failed to create containerd task: ferry-runc: restore of container abc "
            "refused: snapshot m/app: checksum mismatch");
  EXPECT_EQ(restore_failure(waiting("CreateContainerError",
                                    "ferry-runc: restore of container abc refused: open "
                                    "snapshot: no snapshot for migration m")),
            "");
  EXPECT_EQ(restore_failure(waiting("ContainerCreating", "")), "");
  EXPECT_EQ(restore_failure(waiting("ImagePullBackOff", "image not found")), "");
  json running = {
      {"status",
       {{"containerStatuses", {{{"name", "app"}, {"state", {{"running", json::object()}}}}}}}}};
  EXPECT_EQ(restore_failure(running), "");
}

// The store's own words for "not yet" (what ferry-runc waits on and then
// reports if it gives up) must keep matching what the agent skips.
TEST(RestoreFailureTest, TheStoresNotYetRefusalsAreNotFailures) {
  const std::string root =
      ::testing::TempDir() + "/restore-failure-store-" + std::to_string(getpid());
  std::filesystem::create_directories(root);
  store::SnapshotStore store(root);
  const store::Binding pod{
      .namespace_name = "shop", .pod_name = "web-x1", .pod_uid = "uid-x1", .container_name = "app"};
  const Status not_published = store.open("mig-1", "app", pod, store::Verify::kSizes).status();
  ASSERT_EQ(not_published.reason(), "SnapshotNotFound");
  const Status not_granted = store.read_grant("mig-1").status();
  ASSERT_EQ(not_granted.reason(), "SnapshotNotGranted");
  for (const Status& s : {not_published, not_granted}) {
    const std::string message =
        "failed to create containerd task: ferry-runc: restore of "
        "container abc refused: " +
        s.with_context("open snapshot " + root + "/mig-1/app").message();
    EXPECT_EQ(restore_failure(waiting("CreateContainerError", message)), "") << message;
  }
  std::filesystem::remove_all(root);
}

TEST(ServingGateTest, OnlyPodsDeclaringTheGate) {
  EXPECT_TRUE(has_serving_gate(
      {{"spec", {{"readinessGates", {{{"conditionType", "ferry.dev/serving"}}}}}}}));
  EXPECT_FALSE(has_serving_gate({{"spec", {{"readinessGates", {{{"conditionType", "other"}}}}}}}));
  EXPECT_FALSE(has_serving_gate({{"spec", json::object()}}));
}

}  // namespace
}  // namespace ferry::agent
