// The Migration controller against a real API server (nodes and pods are
// API objects here; no kubelet runs): every impossible Migration ends
// Failed with its reason in a condition, status and an Event, touching
// nothing else; a possible one gets its target chosen with reasons and is
// handed to the agents (Checkpointing).
#include <gtest/gtest.h>

#include <thread>

#include "control_plane.h"
#include "kube_client.h"
#include "migration/controller.h"

#ifndef FERRY_CRD_DIR
#error "FERRY_CRD_DIR must name the crds/ directory"
#endif

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;
using kube::json;

class AdmissionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& cp = ControlPlaneEnvironment::get();
    ASSERT_EQ(cp.kubectl({"apply", "-f", FERRY_CRD_DIR})->exit_code, 0);
    ASSERT_EQ(cp.kubectl({"wait", "--for=condition=Established", "--timeout=30s",
                          "crd/migrations.ferry.dev"})
                  ->exit_code,
              0);
    ASSERT_EQ(cp.kubectl({"apply", "-f", "-"}, R"(
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: ferry}
handler: ferry
)")
                  ->exit_code,
              0);
    make_node("node-1", "8Gi", false);
    make_node("node-2", "4Gi", false);
    make_node("node-3", "16Gi", false);
    make_node("node-cordoned", "32Gi", true);
    make_pod("web", "node-1", "ferry", false, "");
    make_pod("plain", "node-1", "", false, "");
    make_pod("hostnet", "node-1", "ferry", true, "");
    make_pod("picky", "node-1", "ferry", false, "nowhere");
  }

  static void make_node(const std::string& name, const std::string& mem, bool cordoned) {
    auto& cp = ControlPlaneEnvironment::get();
    json node = {{"apiVersion", "v1"},
                 {"kind", "Node"},
                 {"metadata", {{"name", name}}},
                 {"spec", {{"unschedulable", cordoned}}}};
    ASSERT_EQ(cp.kubectl({"create", "-f", "-"}, node.dump())->exit_code, 0);
    json status = {{"status",
                    {{"allocatable", {{"cpu", "4"}, {"memory", mem}, {"pods", "110"}}},
                     {"capacity", {{"cpu", "4"}, {"memory", mem}, {"pods", "110"}}},
                     {"conditions",
                      {{{"type", "Ready"},
                        {"status", "True"},
                        {"reason", "KubeletReady"},
                        {"message", "test"}}}}}}};
    auto r = cp.kubectl(
        {"patch", "node", name, "--subresource=status", "--type=merge", "-p", status.dump()});
    ASSERT_EQ(r->exit_code, 0) << r->err;
    // The API server taints new nodes not-ready; the node lifecycle
    // controller (not running here) lifts it once the node is Ready.
    auto t = cp.kubectl({"taint", "nodes", name, "node.kubernetes.io/not-ready:NoSchedule-"});
    ASSERT_EQ(t->exit_code, 0) << t->err;
  }

  static void make_pod(const std::string& name, const std::string& node,
                       const std::string& runtime_class, bool host_network,
                       const std::string& zone) {
    auto& cp = ControlPlaneEnvironment::get();
    json pod = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", name}, {"namespace", "default"}}},
                {"spec",
                 {{"nodeName", node},
                  {"hostNetwork", host_network},
                  {"containers",
                   {{{"name", "app"},
                     {"image", "ferry.local/statekeeper:dev"},
                     {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "256Mi"}}}}}}}}}}};
    if (!runtime_class.empty()) pod["spec"]["runtimeClassName"] = runtime_class;
    if (!zone.empty()) pod["spec"]["nodeSelector"] = {{"zone", zone}};
    auto r = cp.kubectl({"create", "-f", "-"}, pod.dump());
    ASSERT_EQ(r->exit_code, 0) << r->err;
    auto st = cp.kubectl({"patch", "pod", name, "--subresource=status", "--type=merge", "-p",
                          R"({"status":{"phase":"Running"}})"});
    ASSERT_EQ(st->exit_code, 0) << st->err;
  }

  void SetUp() override {
    client_ = client_for(ControlPlaneEnvironment::get());
    controller_ = std::make_unique<operator_::MigrationController>(*client_);
    thread_ = std::jthread([this](std::stop_token s) { controller_->run(s, 2); });
    ASSERT_TRUE(wait([&] { return controller_->synced(); }));
  }
  void TearDown() override {
    thread_.request_stop();
    thread_.join();
  }

  static bool wait(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  }

  // Creates a Migration and waits for a final or handed-over phase.
  json migrate(const std::string& name, const std::string& pod, const std::string& target = "") {
    json m = {{"apiVersion", "ferry.dev/v1alpha1"},
              {"kind", "Migration"},
              {"metadata", {{"name", name}, {"namespace", "default"}}},
              {"spec", {{"podName", pod}}}};
    if (!target.empty()) m["spec"]["targetNode"] = target;
    EXPECT_TRUE(client_->create(operator_::kMigrations, "default", m).ok());
    json got;
    EXPECT_TRUE(wait([&] {
      auto r = client_->get(operator_::kMigrations, "default", name);
      if (!r.ok()) return false;
      got = *r;
      std::string phase = got.value(json::json_pointer("/status/phase"), std::string());
      return phase == "Failed" || phase == "RolledBack" || phase == "Checkpointing";
    })) << got.dump(2);
    return got;
  }

  void expect_refused(const std::string& name, const std::string& pod, const std::string& target,
                      const std::string& reason, const std::string& words) {
    std::string pod_rv_before = pod_rv(pod);
    json m = migrate(name, pod, target);
    EXPECT_EQ(m["status"]["phase"], "Failed") << m.dump(2);
    EXPECT_EQ(m["status"]["failure"]["reason"], reason) << m.dump(2);
    std::string message = m["status"]["failure"]["message"];
    EXPECT_NE(message.find(words), std::string::npos) << message;
    bool condition = false;
    for (const auto& c : m["status"]["conditions"]) {
      condition |= c["type"] == "Failed" && c["status"] == "True" && c["reason"] == reason;
    }
    EXPECT_TRUE(condition) << m.dump(2);
    EXPECT_EQ(pod_rv(pod), pod_rv_before) << "the pod was not touched";
    EXPECT_TRUE(wait([&] {
      auto events = client_->list(kube::resources::kEvents, "default",
                                  {.field_selector = "regarding.name=" + name});
      return events.ok() && !(*events)["items"].empty() &&
             (*events)["items"][0]["reason"] == reason;
    })) << "a Warning event says why";
  }

  std::string pod_rv(const std::string& pod) {
    auto p = client_->get(kube::resources::kPods, "default", pod);
    return p.ok() ? (*p)["metadata"]["resourceVersion"].get<std::string>() : "";
  }

  std::unique_ptr<kube::Client> client_;
  std::unique_ptr<operator_::MigrationController> controller_;
  std::jthread thread_;
};

TEST_F(AdmissionTest, NonexistentPod) {
  expect_refused("m-ghost", "ghost", "", "PodNotFound", "pod default/ghost not found");
}

TEST_F(AdmissionTest, PodNotOnTheFerryRuntime) {
  expect_refused("m-plain", "plain", "", "NotOnFerryRuntime", "runtimeClassName: ferry");
}

TEST_F(AdmissionTest, HostNetworkPod) {
  expect_refused("m-hostnet", "hostnet", "", "HostNetworkUnsupported", "host network");
}

TEST_F(AdmissionTest, TargetEqualToSource) {
  expect_refused("m-same", "web", "node-1", "TargetIsSource", "already runs on");
}

TEST_F(AdmissionTest, UnknownAndCordonedTargets) {
  expect_refused("m-unknown", "web", "node-9", "TargetNodeNotFound", "does not exist");
  expect_refused("m-cordoned", "web", "node-cordoned", "TargetNodeIneligible", "cordoned");
}

TEST_F(AdmissionTest, NoEligibleNode) {
  expect_refused("m-picky", "picky", "", "NoEligibleNode", "nodeSelector");
}

TEST_F(AdmissionTest, PossibleMigrationGetsATargetWithReasons) {
  json m = migrate("m-web", "web");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing") << m.dump(2);
  EXPECT_EQ(m["status"]["sourceNode"], "node-1");
  EXPECT_EQ(m["status"]["targetNode"], "node-3") << "most free memory, not cordoned";
  std::string reasons = m["status"]["targetReasons"].dump();
  EXPECT_NE(reasons.find("node-cordoned: cordoned"), std::string::npos) << reasons;
  EXPECT_NE(reasons.find("node-3: chosen"), std::string::npos) << reasons;
  std::vector<std::string> phases;
  for (const auto& t : m["status"]["phaseTransitionTimestamps"]) phases.push_back(t["phase"]);
  EXPECT_EQ(phases, (std::vector<std::string>{"Pending", "Scheduling", "Checkpointing"}));
  auto table = ControlPlaneEnvironment::get().kubectl({"get", "migrations", "m-web"});
  EXPECT_NE(table->out.find("Checkpointing   web   node-1   node-3"), std::string::npos)
      << table->out;
}

TEST_F(AdmissionTest, CancelBeforeTheSwitchRollsBack) {
  json m = migrate("m-cancel", "web", "node-2");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing");
  ASSERT_TRUE(client_
                  ->patch(operator_::kMigrations, "default", "m-cancel", kube::PatchType::kMerge,
                          {{"spec", {{"cancel", true}}}})
                  .ok());
  EXPECT_TRUE(wait([&] {
    auto r = client_->get(operator_::kMigrations, "default", "m-cancel");
    return r.ok() && (*r)["status"]["phase"] == "RolledBack" &&
           (*r)["status"]["failure"]["reason"] == "Cancelled";
  }));
}

}  // namespace
}  // namespace ferry::testing
