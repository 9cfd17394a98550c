// The Migration controller against a real API server (nodes and pods are
// API objects here; no kubelet or agent runs, the test plays their part by
// writing what they would write): every impossible Migration ends Failed
// with its reason in a condition, status and an Event, touching nothing
// else; a possible one gets its target chosen with reasons, a replacement
// pod on the target, and is handed to the agents (Checkpointing); then the
// operator's phases follow what the agents report, through the switch or
// back.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "control_plane.h"
#include "kube_client.h"
#include "migration/controller.h"
#include "wait_until.h"

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
                          "crd/migrations.ferry.dev", "crd/migrationpolicies.ferry.dev"})
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
    make_pod("web2", "node-1", "ferry", false, "");
    make_pod("web3", "node-2", "ferry", false, "");
    make_pod("web4", "node-2", "ferry", false, "");
    make_pod("plain", "node-1", "", false, "");
    make_pod("hostnet", "node-1", "ferry", true, "");
    make_pod("picky", "node-1", "ferry", false, "nowhere");
  }

  static void make_node(const std::string& name, const std::string& mem, bool cordoned) {
    auto& cp = ControlPlaneEnvironment::get();
    json node = {{"apiVersion", "v1"},
                 {"kind", "Node"},
                 {"metadata",
                  {{"name", name},
                   {"annotations",
                    {{"ferry.dev/agent",
                      R"({"criuVersion":"4.2.1","lazyPages":true,"pageTransferTls":true})"}}}}},
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
    json pod = {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"app", name}}}}},
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
    // Limits high enough that Migrations left in flight by earlier tests
    // do not queue later ones.
    controller_ = std::make_unique<operator_::MigrationController>(
        *client_,
        operator_::ControllerOptions{.max_in_flight = 100, .max_in_flight_per_node = 100});
    thread_ = std::jthread([this](std::stop_token s) { controller_->run(s, 2); });
    ASSERT_TRUE(wait([&] { return controller_->synced(); }));
  }
  void TearDown() override {
    thread_.request_stop();
    thread_.join();
  }

  static bool wait(const std::function<bool()>& cond) { return wait_until(cond, 30s, 50ms); }

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

  // What an agent writes: the next phase, with its transition.
  void agent_moves(const std::string& name, const std::string& phase) {
    auto r = client_->get(operator_::kMigrations, "default", name);
    ASSERT_TRUE(r.ok());
    json transitions = (*r)["status"]["phaseTransitionTimestamps"];
    transitions.push_back({{"phase", phase}, {"time", "2026-01-01T00:00:00.000Z"}});
    transitions.back()["time"] = api::rfc3339_now();
    json body = {{"metadata", {{"resourceVersion", (*r)["metadata"]["resourceVersion"]}}},
                 {"status", {{"phase", phase}, {"phaseTransitionTimestamps", transitions}}}};
    auto p = client_->patch(operator_::kMigrations, "default", name, kube::PatchType::kMerge, body,
                            {.subresource = "status"});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
  }

  // No kubelet here: once the operator asked for a pod's deletion, confirm
  // it as kubelet would after the containers stopped.
  void play_kubelet_deleting(const std::string& pod) {
    ASSERT_TRUE(wait([&] {
      auto p = client_->get(kube::resources::kPods, "default", pod);
      return p.ok() && p->contains("metadata") && (*p)["metadata"].contains("deletionTimestamp");
    })) << pod
        << " was not deleted";
    ASSERT_TRUE(
        client_->remove(kube::resources::kPods, "default", pod, {.grace_period_seconds = 0}).ok());
  }

  json wait_phase(const std::string& name, const std::string& phase) {
    json got;
    EXPECT_TRUE(wait([&] {
      auto r = client_->get(operator_::kMigrations, "default", name);
      if (!r.ok()) return false;
      got = *r;
      return got.value(json::json_pointer("/status/phase"), std::string()) == phase;
    })) << got.dump(2);
    return got;
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

// A pod seen Running and migrated at once (a script, or kubectl apply of
// both): the Migration's watch event may reach the operator before the
// pod's. The refusal is final, so the operator asks the API server rather
// than refuse a running pod its cache has not caught up with. The race is
// the cache's, so each round makes the window as small as a client can:
// no kubectl, the status write and the Migration back to back.
TEST_F(AdmissionTest, APodSeenRunningAMomentAgoIsNotRefusedOnAStaleCache) {
  for (int round = 0; round < 12; ++round) {
    const std::string pod = "fresh-" + std::to_string(round);
    json body = {{"apiVersion", "v1"},
                 {"kind", "Pod"},
                 {"metadata", {{"name", pod}, {"namespace", "default"}}},
                 {"spec",
                  {{"nodeName", "node-1"},
                   {"runtimeClassName", "ferry"},
                   {"containers",
                    {{{"name", "app"},
                      {"image", "ferry.local/statekeeper:dev"},
                      {"resources", {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}}}}}}}}};
    ASSERT_TRUE(client_->create(kube::resources::kPods, "default", body).ok());
    ASSERT_TRUE(client_
                    ->patch(kube::resources::kPods, "default", pod, kube::PatchType::kMerge,
                            {{"status", {{"phase", "Running"}}}}, {.subresource = "status"})
                    .ok());
    json m = migrate("m-" + pod, pod, "node-3");
    EXPECT_EQ(m["status"]["phase"], "Checkpointing") << m.dump(2);
  }
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
  json m = migrate("m-cancel", "web2", "node-2");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing");
  const std::string replacement = m["status"]["targetPod"];
  ASSERT_TRUE(client_
                  ->patch(operator_::kMigrations, "default", "m-cancel", kube::PatchType::kMerge,
                          {{"spec", {{"cancel", true}}}})
                  .ok());
  // The replacement must be gone before the source may thaw.
  play_kubelet_deleting(replacement);
  json done = wait_phase("m-cancel", "RolledBack");
  EXPECT_EQ(done["status"]["failure"]["reason"], "Cancelled") << done.dump(2);
  EXPECT_FALSE(client_->get(kube::resources::kPods, "default", replacement).ok());
  EXPECT_TRUE(client_->get(kube::resources::kPods, "default", "web2").ok()) << "source kept";
}

TEST_F(AdmissionTest, ASecondMigrationOfTheSamePodIsRefused) {
  json first = migrate("m-first", "web4");
  ASSERT_EQ(first["status"]["phase"], "Checkpointing");
  json second = migrate("m-second", "web4");
  EXPECT_EQ(second["status"]["phase"], "Failed");
  EXPECT_EQ(second["status"]["failure"]["reason"], "AlreadyMigrating") << second.dump(2);
  EXPECT_NE(second["status"]["failure"]["message"].get<std::string>().find("m-first"),
            std::string::npos);
}

TEST_F(AdmissionTest, TheOperatorCarriesABarePodThroughTheSwitch) {
  json m = migrate("m-switch", "web3", "node-3");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing") << m.dump(2);
  EXPECT_EQ(m["metadata"]["labels"]["ferry.dev/source-node"], "node-2");
  EXPECT_EQ(m["metadata"]["labels"]["ferry.dev/target-node"], "node-3");
  const std::string replacement = m["status"]["targetPod"];
  auto pod = client_->get(kube::resources::kPods, "default", replacement);
  ASSERT_TRUE(pod.ok()) << replacement;
  EXPECT_EQ((*pod)["metadata"]["uid"], m["status"]["targetPodUID"]);
  EXPECT_EQ((*pod)["spec"]["nodeName"], "node-3");
  EXPECT_EQ((*pod)["spec"]["runtimeClassName"], "ferry");
  EXPECT_EQ((*pod)["metadata"]["labels"]["app"], "web3") << "same labels: Services select it";
  EXPECT_EQ((*pod)["metadata"]["annotations"]["ferry.dev/restore-from"], m["metadata"]["uid"]);
  EXPECT_EQ((*pod)["spec"]["readinessGates"][0]["conditionType"], "ferry.dev/serving");

  // The source agent published the snapshot: the operator marks the
  // replacement so kubelet retries its container create at once.
  agent_moves("m-switch", "Restoring");
  EXPECT_TRUE(wait([&] {
    auto p = client_->get(kube::resources::kPods, "default", replacement);
    return p.ok() && p->value(json::json_pointer("/metadata/annotations/ferry.dev~1snapshot-ready"),
                              std::string()) == "true";
  }));
  // The target agent saw it running: the operator deletes the source...
  agent_moves("m-switch", "Switching");
  play_kubelet_deleting("web3");
  // ... and succeeds once it is gone.
  json done = wait_phase("m-switch", "Succeeded");
  EXPECT_FALSE(done["status"]["durations"]["total"].get<std::string>().empty());
  EXPECT_TRUE(client_->get(kube::resources::kPods, "default", replacement).ok());
  auto table = ControlPlaneEnvironment::get().kubectl({"get", "migrations", "m-switch"});
  EXPECT_NE(table->out.find("Succeeded   web3   node-2   node-3"), std::string::npos) << table->out;
}

TEST_F(AdmissionTest, DeletingAMigrationMidFlightRollsBackBeforeItGoes) {
  make_pod("web9", "node-1", "ferry", false, "");
  json m = migrate("m-delete", "web9", "node-2");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing");
  EXPECT_NE(m["metadata"]["finalizers"].dump().find("ferry.dev/operator"), std::string::npos)
      << m.dump(2);
  const std::string replacement = m["status"]["targetPod"];
  ASSERT_TRUE(client_->remove(operator_::kMigrations, "default", "m-delete").ok());
  // Held by the finalizer until the replacement is gone and it rolled back.
  play_kubelet_deleting(replacement);
  EXPECT_TRUE(wait([&] {
    return client_->get(operator_::kMigrations, "default", "m-delete").status().code() ==
           Code::kNotFound;
  })) << "the Migration is released once rolled back";
  EXPECT_FALSE(client_->get(kube::resources::kPods, "default", replacement).ok());
  EXPECT_TRUE(client_->get(kube::resources::kPods, "default", "web9").ok()) << "source kept";
}

TEST_F(AdmissionTest, NoProgressWithinProgressSecondsRollsBack) {
  make_pod("web6", "node-1", "ferry", false, "");
  json m = {{"apiVersion", "ferry.dev/v1alpha1"},
            {"kind", "Migration"},
            {"metadata", {{"name", "m-slow"}, {"namespace", "default"}}},
            {"spec", {{"podName", "web6"}, {"timeouts", {{"progressSeconds", 5}}}}}};
  ASSERT_TRUE(client_->create(operator_::kMigrations, "default", m).ok());
  json started = wait_phase("m-slow", "Checkpointing");
  // No agent answers: after 5 s the operator gives up and rolls back.
  play_kubelet_deleting(started["status"]["targetPod"]);
  json done = wait_phase("m-slow", "RolledBack");
  EXPECT_EQ(done["status"]["failure"]["reason"], "ProgressTimeout") << done.dump(2);
  EXPECT_NE(done["status"]["failure"]["message"].get<std::string>().find("Checkpointing"),
            std::string::npos);
}

TEST_F(AdmissionTest, AnAgentFailureRollsBackAfterTheReplacementIsGone) {
  make_pod("web5", "node-1", "ferry", false, "");
  json m = migrate("m-fail", "web5", "node-2");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing");
  const std::string replacement = m["status"]["targetPod"];
  json failure = {{"status",
                   {{"failure",
                     {{"reason", "CheckpointFailed"},
                      {"message", "checkpoint failed: criu said no"},
                      {"criuLogExcerpt", "Error (criu/cr-dump.c:1): no"}}}}}};
  ASSERT_TRUE(client_
                  ->patch(operator_::kMigrations, "default", "m-fail", kube::PatchType::kMerge,
                          failure, {.subresource = "status"})
                  .ok());
  play_kubelet_deleting(replacement);
  json done = wait_phase("m-fail", "RolledBack");
  EXPECT_EQ(done["status"]["failure"]["reason"], "CheckpointFailed");
  EXPECT_EQ(done["status"]["failure"]["criuLogExcerpt"], "Error (criu/cr-dump.c:1): no");
}

// A pod of a ReplicaSet (the owner is only named here: no controller
// manager runs, so the test creates the pods the owner and the webhook
// would).
void make_owned_pod(const std::string& name, const std::string& node,
                    const std::map<std::string, std::string>& annotations,
                    const std::map<std::string, std::string>& extra_labels = {}) {
  auto& cp = ControlPlaneEnvironment::get();
  json labels = {{"app", "owned"}, {"ferry.dev/migratable", "true"}};
  for (const auto& [k, v] : extra_labels) labels[k] = v;
  json pod = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata",
               {{"name", name},
                {"namespace", "default"},
                {"labels", labels},
                {"annotations", annotations},
                {"ownerReferences",
                 {{{"apiVersion", "apps/v1"},
                   {"kind", "ReplicaSet"},
                   {"name", "owned-rs"},
                   {"uid", "6c1d3a1e-0000-4000-8000-00000000a11c"},
                   {"controller", true}}}}}},
              {"spec",
               {{"nodeName", node},
                {"runtimeClassName", "ferry"},
                {"containers",
                 {{{"name", "app"},
                   {"image", "ferry.local/statekeeper:dev"},
                   {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "256Mi"}}}}}}}}}}};
  auto r = cp.kubectl({"create", "-f", "-"}, pod.dump());
  ASSERT_EQ(r->exit_code, 0) << r->err;
  auto st = cp.kubectl({"patch", "pod", name, "--subresource=status", "--type=merge", "-p",
                        R"({"status":{"phase":"Running"}})"});
  ASSERT_EQ(st->exit_code, 0) << st->err;
}

bool has_condition(const json& m, const std::string& type) {
  for (const auto& c : m.value(json::json_pointer("/status/conditions"), json::array())) {
    if (c.value("type", "") == type && c.value("status", "") == "True") return true;
  }
  return false;
}

// The policy's mode where the pod can take it, its fallbackMode where it
// cannot: PostCopy is refused for an owned pod (its replacement comes only
// after the source is deleted), so the owned pod falls back to Cold.
TEST_F(AdmissionTest, AMatchingPolicyGivesTheEffectiveSettingsAndItsFallback) {
  make_pod("web7", "node-1", "ferry", false, "");
  make_owned_pod("owned-policy", "node-1", {}, {{"ferry-test/policy", "web7"}});
  auto& cp = ControlPlaneEnvironment::get();
  auto r = cp.kubectl({"apply", "-f", "-"}, R"(
apiVersion: ferry.dev/v1alpha1
kind: MigrationPolicy
metadata: {name: web7-policy}
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [web7]}
  mode: PostCopy
  fallbackMode: Cold
  timeouts: {progressSeconds: 30}
---
apiVersion: ferry.dev/v1alpha1
kind: MigrationPolicy
metadata: {name: owned-policy}
spec:
  podSelector: {matchLabels: {ferry-test/policy: web7}}
  mode: PostCopy
  fallbackMode: Cold
  timeouts: {progressSeconds: 30}
)");
  ASSERT_EQ(r->exit_code, 0) << r->err;
  auto fell_back = [](const json& m) {
    for (const auto& c : m.value(json::json_pointer("/status/conditions"), json::array())) {
      if (c.value("type", "") == "ModeFallback" && c.value("reason", "") == "ModeUnsupported") {
        return true;
      }
    }
    return false;
  };
  json bare = migrate("m-policy", "web7");
  ASSERT_EQ(bare["status"]["phase"], "Checkpointing") << bare.dump(2);
  EXPECT_EQ(bare["status"]["effective"], json({{"policy", "web7-policy"},
                                               {"mode", "PostCopy"},
                                               {"completionSeconds", 600},
                                               {"progressSeconds", 30}}));
  EXPECT_FALSE(fell_back(bare)) << "a bare pod takes PostCopy: " << bare.dump(2);

  json owned = migrate("m-policy-owned", "owned-policy", "node-3");
  ASSERT_EQ(owned["status"]["phase"], "Checkpointing") << owned.dump(2);
  EXPECT_EQ(owned["status"]["effective"], json({{"policy", "owned-policy"},
                                                {"mode", "Cold"},
                                                {"completionSeconds", 600},
                                                {"progressSeconds", 30}}));
  EXPECT_TRUE(fell_back(owned)) << owned.dump(2);

  make_pod("web8", "node-1", "ferry", false, "");
  json other = migrate("m-nopolicy", "web8");
  EXPECT_EQ(other["status"]["effective"]["policy"], "") << "not selected: the defaults";
  EXPECT_EQ(other["status"]["effective"]["progressSeconds"], 120);
}

TEST_F(AdmissionTest, AnOwnedPodIsDeletedForItsOwnerWhoseMarkedPodTakesOver) {
  make_owned_pod("owned-a", "node-1", {});
  json m = migrate("m-owned", "owned-a", "node-3");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing") << m.dump(2);
  EXPECT_EQ(m["status"]["ownerKind"], "ReplicaSet");
  EXPECT_EQ(m["status"]["ownerName"], "owned-rs");
  EXPECT_FALSE(m["status"].contains("targetPod")) << "the owner creates the replacement";
  const std::string uid = m["metadata"]["uid"];

  // The source agent published the snapshot: the operator records that it
  // deletes the source, then deletes it.
  agent_moves("m-owned", "Restoring");
  json restoring;
  ASSERT_TRUE(wait([&] {
    auto r = client_->get(operator_::kMigrations, "default", "m-owned");
    restoring = r.ok() ? *r : json();
    return r.ok() && has_condition(*r, "SourceDeleted");
  })) << restoring.dump(2);
  play_kubelet_deleting("owned-a");
  // Past that point a cancel cannot undo anything: it is ignored.
  ASSERT_TRUE(client_
                  ->patch(operator_::kMigrations, "default", "m-owned", kube::PatchType::kMerge,
                          {{"spec", {{"cancel", true}}}})
                  .ok());

  // The owner's new pod, as the webhook marked it; then a second one.
  make_owned_pod("owned-b", "node-3",
                 {{"ferry.dev/restore-from", uid}, {"ferry.dev/migration", "m-owned"}});
  json picked;
  ASSERT_TRUE(wait([&] {
    auto r = client_->get(operator_::kMigrations, "default", "m-owned");
    picked = r.ok() ? *r : json();
    return r.ok() && picked.value(json::json_pointer("/status/targetPod"), "") == "owned-b";
  })) << picked.dump(2);
  EXPECT_EQ(picked["status"]["phase"], "Restoring") << "the cancel was ignored";
  ASSERT_TRUE(wait([&] {
    auto p = client_->get(kube::resources::kPods, "default", "owned-b");
    return p.ok() && p->value(json::json_pointer("/metadata/annotations/ferry.dev~1snapshot-ready"),
                              "") == "true";
  })) << "the chosen replacement is marked snapshot-ready";
  make_owned_pod("owned-c", "node-2",
                 {{"ferry.dev/restore-from", uid}, {"ferry.dev/migration", "m-owned"}});
  play_kubelet_deleting("owned-c");  // a second marked pod is deleted; its owner makes up for it

  agent_moves("m-owned", "Switching");
  json done = wait_phase("m-owned", "Succeeded");
  EXPECT_EQ(done["status"]["targetPod"], "owned-b");
  auto kept = client_->get(kube::resources::kPods, "default", "owned-b");
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE((*kept)["metadata"].contains("deletionTimestamp")) << "the replacement stays";
}

TEST_F(AdmissionTest, AnOwnedPodsFailureAfterTheSourceWasDeletedEndsFailedNotRolledBack) {
  make_owned_pod("owned-d", "node-1", {});
  json m = migrate("m-owned-fail", "owned-d", "node-2");
  ASSERT_EQ(m["status"]["phase"], "Checkpointing") << m.dump(2);
  agent_moves("m-owned-fail", "Restoring");
  play_kubelet_deleting("owned-d");
  json failure = {
      {"status",
       {{"failure", {{"reason", "RestoreFailed"}, {"message", "restore failed on node-2: no"}}}}}};
  ASSERT_TRUE(client_
                  ->patch(operator_::kMigrations, "default", "m-owned-fail",
                          kube::PatchType::kMerge, failure, {.subresource = "status"})
                  .ok());
  json done = wait_phase("m-owned-fail", "Failed");
  EXPECT_EQ(done["status"]["failure"]["reason"], "RestoreFailed");
  std::string message = done["status"]["failure"]["message"];
  EXPECT_NE(message.find("nothing to roll back to; the snapshot is kept"), std::string::npos)
      << message;
}

TEST_F(AdmissionTest, AnOwnedPodWithoutTheOptInLabelIsRefused) {
  auto& cp = ControlPlaneEnvironment::get();
  make_owned_pod("owned-e", "node-1", {});
  ASSERT_EQ(cp.kubectl({"label", "pod", "owned-e", "ferry.dev/migratable-"})->exit_code, 0);
  expect_refused("m-owned-nolabel", "owned-e", "", "OwnedPodNotOptedIn",
                 "ferry.dev/migratable=true");
}

}  // namespace
}  // namespace ferry::testing
