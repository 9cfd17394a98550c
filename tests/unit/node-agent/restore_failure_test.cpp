// How the target agent tells a failed restore (report it: roll back) from
// ferry-runc's "not published yet" refusal (wait) in kubelet's container
// status, and which pods carry Ferry's readiness gate.
#include <gtest/gtest.h>

#include "controller/agent_controller.h"

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

TEST(ServingGateTest, OnlyPodsDeclaringTheGate) {
  EXPECT_TRUE(has_serving_gate(
      {{"spec", {{"readinessGates", {{{"conditionType", "ferry.dev/serving"}}}}}}}));
  EXPECT_FALSE(has_serving_gate({{"spec", {{"readinessGates", {{{"conditionType", "other"}}}}}}}));
  EXPECT_FALSE(has_serving_gate({{"spec", json::object()}}));
}

}  // namespace
}  // namespace ferry::agent
