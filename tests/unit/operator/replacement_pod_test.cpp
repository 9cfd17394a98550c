// The replacement pod the operator creates for a bare pod: what Kubernetes
// and ferry-runc need to see on it, and nothing the source's identity on
// its node would break (name, node, restore annotation, gate).
#include <gtest/gtest.h>

#include "migration/controller.h"

namespace ferry::operator_ {
namespace {

using kube::json;

api::Migration migration() {
  api::Migration m;
  m.ns = "shop";
  m.name = "move-cart";
  m.uid = "1c9f0a7e-5d44-4b7a-9a51-1f5c7c1d2e3f";
  m.spec.pod_name = "cart";
  return m;
}

json source_pod() {
  return {
      {"metadata",
       {{"name", "cart"},
        {"namespace", "shop"},
        {"uid", "src-uid"},
        {"resourceVersion", "42"},
        {"labels", {{"app", "cart"}}},
        {"annotations",
         {{"team", "payments"}, {"kubectl.kubernetes.io/last-applied-configuration", "{...}"}}}}},
      {"spec",
       {{"nodeName", "node-1"},
        {"runtimeClassName", "ferry"},
        {"containers", {{{"name", "app"}, {"image", "cart:1"}}}},
        {"ephemeralContainers", {{{"name", "debug"}}}}}},
      {"status", {{"phase", "Running"}}}};
}

TEST(ReplacementPodTest, SameLabelsAndSpecPinnedToTheTargetWithRestoreAnnotationAndGate) {
  json pod = replacement_pod(migration(), source_pod(), "node-2");
  EXPECT_EQ(pod["metadata"]["name"], "cart-1c9f0");
  EXPECT_EQ(pod["metadata"]["namespace"], "shop");
  EXPECT_EQ(pod["metadata"]["labels"], json({{"app", "cart"}}));
  EXPECT_EQ(pod["metadata"]["annotations"]["team"], "payments");
  EXPECT_EQ(pod["metadata"]["annotations"]["ferry.dev/restore-from"], migration().uid);
  EXPECT_EQ(pod["metadata"]["annotations"]["ferry.dev/migration"], "move-cart");
  EXPECT_FALSE(
      pod["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
  EXPECT_FALSE(pod["metadata"].contains("uid"));
  EXPECT_FALSE(pod["metadata"].contains("resourceVersion"));
  EXPECT_FALSE(pod.contains("status"));
  EXPECT_EQ(pod["spec"]["nodeName"], "node-2");
  EXPECT_EQ(pod["spec"]["runtimeClassName"], "ferry");
  EXPECT_FALSE(pod["spec"].contains("ephemeralContainers"));
  EXPECT_EQ(pod["spec"]["containers"], source_pod()["spec"]["containers"]);
  EXPECT_EQ(pod["spec"]["readinessGates"], json::array({{{"conditionType", "ferry.dev/serving"}}}));
}

TEST(ReplacementPodTest, AnExistingGateIsNotDuplicated) {
  json src = source_pod();
  src["spec"]["readinessGates"] = {{{"conditionType", "ferry.dev/serving"}}};
  EXPECT_EQ(replacement_pod(migration(), src, "node-2")["spec"]["readinessGates"].size(), 1u);
}

TEST(ReplacementPodTest, NameStaysAValidHostnameLabel) {
  std::string long_name(70, 'a');
  std::string name = replacement_pod_name(long_name, "abcdef");
  EXPECT_LE(name.size(), 63u);
  EXPECT_EQ(name.substr(name.size() - 6), "-abcde");
  EXPECT_EQ(replacement_pod_name(std::string(57, 'b') + "-x", "12345"),
            std::string(57, 'b') + "-12345")
      << "no '--' from a cut at a dash";
}

}  // namespace
}  // namespace ferry::operator_
