// Ferry's CRDs (crds/) on a real kube-apiserver: they install, the samples
// are accepted, malformed Migrations are rejected with the schema's own
// message, defaults apply, immutable fields stay immutable, and the kubectl
// views users rely on work (get columns, explain, wait on the phase).
#include <gtest/gtest.h>

#include "control_plane.h"

#ifndef FERRY_CRD_DIR
#error "FERRY_CRD_DIR must name the crds/ directory"
#endif

namespace ferry::testing {
namespace {

class CrdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& cp = ControlPlaneEnvironment::get();
    auto applied = cp.kubectl({"apply", "-f", FERRY_CRD_DIR});
    ASSERT_TRUE(applied.ok() && applied->exit_code == 0) << applied->err;
    auto established = cp.kubectl({"wait", "--for=condition=Established", "--timeout=30s",
                                   "crd/migrations.ferry.dev", "crd/migrationpolicies.ferry.dev"});
    ASSERT_TRUE(established.ok() && established->exit_code == 0) << established->err;
  }
  // kubectl with a manifest on stdin; returns {exit code, stdout+stderr}.
  std::pair<int, std::string> apply(const std::string& manifest) {
    auto r = ControlPlaneEnvironment::get().kubectl({"apply", "-f", "-"}, manifest);
    return {r.ok() ? r->exit_code : -1, r.ok() ? r->out + r->err : r.status().to_string()};
  }
  std::string kubectl(const std::vector<std::string>& args) {
    auto r = ControlPlaneEnvironment::get().kubectl(args);
    return r.ok() ? r->out + r->err : r.status().to_string();
  }
};

TEST_F(CrdTest, SamplesAreAccepted) {
  auto r = ControlPlaneEnvironment::get().kubectl(
      {"apply", "-f", std::string(FERRY_CRD_DIR) + "/samples"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->err;
}

TEST_F(CrdTest, MalformedMigrationsAreRejectedWithTheSchemasMessage) {
  auto missing = apply(R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: no-pod}
spec: {targetNode: node-2}
)");
  EXPECT_NE(missing.first, 0);
  EXPECT_NE(missing.second.find("spec.podName: Required value"), std::string::npos)
      << missing.second;

  auto bad_mode = apply(R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: bad-mode}
spec: {podName: web-0, mode: Warm}
)");
  EXPECT_NE(bad_mode.first, 0);
  EXPECT_NE(bad_mode.second.find("spec.mode: Unsupported value: \"Warm\""), std::string::npos)
      << bad_mode.second;

  auto bad_name = apply(R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: bad-name}
spec: {podName: Web_0}
)");
  EXPECT_NE(bad_name.first, 0);
  EXPECT_NE(bad_name.second.find("spec.podName"), std::string::npos) << bad_name.second;

  auto not_yaml = apply("apiVersion: ferry.dev/v1alpha1\nkind: Migration\nspec: [unclosed\n");
  EXPECT_NE(not_yaml.first, 0);
  EXPECT_NE(not_yaml.second.find("error"), std::string::npos) << not_yaml.second;
  EXPECT_EQ(kubectl({"get", "migrations", "-o", "name"}).find("bad-"), std::string::npos)
      << "nothing malformed was stored";
}

TEST_F(CrdTest, DefaultsAndImmutability) {
  ASSERT_EQ(apply(R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: defaults}
spec: {podName: web-0, timeouts: {}}
)")
                .first,
            0);
  // No defaults are stored in spec: an unset mode or timeout is resolved
  // by the operator (MigrationPolicy, else Cold/600/120) into
  // status.effective, so a policy can still apply.
  EXPECT_EQ(kubectl({"get", "migration", "defaults", "-o", "jsonpath={.spec.mode}"}), "");
  EXPECT_NE(kubectl({"explain", "migration.spec.timeouts.completionSeconds"}).find("default 600"),
            std::string::npos);
  std::string mode_set = kubectl(
      {"patch", "migration", "defaults", "--type=merge", "-p", R"({"spec":{"mode":"Cold"}})"});
  EXPECT_NE(mode_set.find("mode is immutable"), std::string::npos) << mode_set;
  std::string changed = kubectl(
      {"patch", "migration", "defaults", "--type=merge", "-p", R"({"spec":{"podName":"web-1"}})"});
  EXPECT_NE(changed.find("podName is immutable"), std::string::npos) << changed;
  std::string cancelled = kubectl(
      {"patch", "migration", "defaults", "--type=merge", "-p", R"({"spec":{"cancel":true}})"});
  EXPECT_EQ(cancelled.find("rror"), std::string::npos) << cancelled;
  std::string uncancel = kubectl(
      {"patch", "migration", "defaults", "--type=merge", "-p", R"({"spec":{"cancel":false}})"});
  EXPECT_NE(uncancel.find("cannot be un-cancelled"), std::string::npos) << uncancel;
}

TEST_F(CrdTest, KubectlViews) {
  ASSERT_EQ(apply(R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: viewed}
spec: {podName: web-0}
)")
                .first,
            0);
  const std::string body =
      R"({"status":{"phase":"Succeeded","sourceNode":"node-1","targetNode":"node-2",)"
      R"("durations":{"total":"3.2s"}}})";
  std::string status =
      kubectl({"patch", "migration", "viewed", "--subresource=status", "--type=merge", "-p", body});
  ASSERT_EQ(status.find("rror"), std::string::npos) << status;
  std::string table = kubectl({"get", "migrations", "viewed"});
  EXPECT_NE(table.find("PHASE"), std::string::npos) << table;
  EXPECT_NE(table.find("SOURCE"), std::string::npos) << table;
  EXPECT_NE(table.find("Succeeded   web-0   node-1   node-2   3.2s"), std::string::npos) << table;
  std::string waited = kubectl(
      {"wait", "--for=jsonpath={.status.phase}=Succeeded", "migration/viewed", "--timeout=10s"});
  EXPECT_NE(waited.find("condition met"), std::string::npos) << waited;
  std::string explained = kubectl({"explain", "migration.spec.mode"});
  EXPECT_NE(explained.find("PostCopy"), std::string::npos) << explained;
  // The phase enum guards status too.
  std::string bogus = kubectl({"patch", "migration", "viewed", "--subresource=status",
                               "--type=merge", "-p", R"({"status":{"phase":"Teleported"}})"});
  EXPECT_NE(bogus.find("Unsupported value"), std::string::npos) << bogus;
}

}  // namespace
}  // namespace ferry::testing
