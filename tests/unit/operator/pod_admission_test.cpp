// The pod admission decisions (operator/admission/pod_admission.h) on
// AdmissionReview requests, without a server: guard keeps the
// ferry.dev/restore-from annotation to the operator at create time and
// immutable afterwards; steer gives opted-in pods the ferry RuntimeClass
// and the serving readiness gate, and marks an owner's replacement for a
// Migration waiting for it (target node, restore annotations), trusting a
// fresh read over a lagging cache. Patches are decoded and applied to the
// pod, so what is checked is the pod the API server would store.
#include "admission/pod_admission.h"

#include <gtest/gtest.h>

#include <map>
#include <utility>
#include <vector>

#include "encoding/base64.h"

namespace ferry::operator_ {
namespace {

using kube::json;

constexpr char kOperator[] = "system:serviceaccount:ferry-system:ferry-operator";
constexpr char kTenant[] = "alice";

json pod(const json& annotations = nullptr) {
  json p = {{"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", "web"}, {"namespace", "shop"}}},
            {"spec", {{"containers", {{{"name", "app"}, {"image", "app:1"}}}}}}};
  if (!annotations.is_null()) p["metadata"]["annotations"] = annotations;
  return p;
}

json create(const json& object, const std::string& user) {
  return {{"uid", "req-1"},
          {"operation", "CREATE"},
          {"namespace", object["metadata"].value("namespace", "shop")},
          {"userInfo", {{"username", user}}},
          {"object", object}};
}

json update(const json& old_object, const json& object, const std::string& user) {
  json r = create(object, user);
  r["operation"] = "UPDATE";
  r["oldObject"] = old_object;
  return r;
}

// A Migration as the API server returns it (the CRD's field names).
struct MigrationFields {
  std::string name = "m-web";
  std::string uid = "mig-uid-1";
  std::string phase = "Restoring";
  std::string pod_name = "web-abc12";
  std::string owner_kind = "ReplicaSet";
  std::string owner_uid = "rs-uid";
  std::string target_node = "node-2";
  std::string target_pod;
  const char* source_deleted = "True";  // nullptr: no such condition
};

api::Migration migration(const MigrationFields& f) {
  json status = {{"phase", f.phase},
                 {"sourceNode", "node-1"},
                 {"targetNode", f.target_node},
                 {"ownerKind", f.owner_kind},
                 {"ownerName", "web-7d9f"},
                 {"ownerUID", f.owner_uid},
                 {"conditions",
                  {{{"type", "Placed"},
                    {"status", "True"},
                    {"reason", "TargetChosen"},
                    {"message", "node-2"},
                    {"lastTransitionTime", "2026-01-01T00:00:00.000Z"}}}}};
  if (!f.target_pod.empty()) status["targetPod"] = f.target_pod;
  if (f.source_deleted != nullptr) {
    status["conditions"].push_back({{"type", "SourceDeleted"},
                                    {"status", f.source_deleted},
                                    {"reason", "SourcePublished"},
                                    {"message", "deleted by Ferry"},
                                    {"lastTransitionTime", "2026-01-01T00:00:01.000Z"}});
  }
  json object = {
      {"apiVersion", "ferry.dev/v1alpha1"},
      {"kind", "Migration"},
      {"metadata", {{"name", f.name}, {"namespace", "shop"}, {"uid", f.uid}, {"generation", 1}}},
      {"spec", {{"podName", f.pod_name}}},
      {"status", status}};
  auto m = api::migration_from_json(object);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return m.ok() ? *m : api::Migration{};
}

// A pod created by its controller `kind` with uid `uid`.
json owned_pod(const std::string& kind, const std::string& uid, const std::string& name = "",
               const json& annotations = nullptr) {
  json p = pod(annotations);
  p["metadata"]["name"] = name;  // generated names are empty at admission
  p["metadata"]["generateName"] = "web-7d9f-";
  p["metadata"]["labels"] = {{"ferry.dev/migratable", "true"}};
  p["metadata"]["ownerReferences"] = {{{"apiVersion", "apps/v1"},
                                       {"kind", kind},
                                       {"name", "web-7d9f"},
                                       {"uid", uid},
                                       {"controller", true},
                                       {"blockOwnerDeletion", true}}};
  return p;
}

// Records on_decision calls and serves Migrations as the cache and the API.
class PodAdmissionTest : public ::testing::Test {
 protected:
  PodAdmission admission(std::string operator_user = kOperator) {
    return PodAdmission(PodAdmissionOptions{
        .operator_user = std::move(operator_user),
        .cached_migrations =
            [this](const std::string& ns) {
              cache_reads_.push_back(ns);
              return cached_;
            },
        .fresh_migration = [this](const std::string& ns,
                                  const std::string& name) -> Result<api::Migration> {
          fresh_reads_.push_back(ns + "/" + name);
          auto it = fresh_.find(name);
          if (it == fresh_.end()) return Status(Code::kNotFound, "migration not found");
          return it->second;
        },
        .on_decision =
            [this](const std::string& webhook, const std::string& decision) {
              decisions_.emplace_back(webhook, decision);
            },
    });
  }

  // The JSONPatch of a response, decoded; empty when there is none.
  static json patch_of(const json& response) {
    if (!response.contains("patch")) return json::array();
    EXPECT_EQ(response.value("patchType", ""), "JSONPatch");
    auto text = encoding::base64_decode(response["patch"].get<std::string>());
    EXPECT_TRUE(text.ok()) << text.status().to_string();
    json ops = json::parse(text.ok() ? *text : "[]", nullptr, false);
    EXPECT_TRUE(ops.is_array()) << *text;
    return ops.is_array() ? ops : json::array();
  }

  // The pod as the API server would store it after `response`'s patch.
  static json patched(const json& object, const json& response) {
    EXPECT_TRUE(response.value("allowed", false)) << response.dump();
    return object.patch(patch_of(response));
  }

  static std::vector<std::string> paths(const json& ops) {
    std::vector<std::string> out;
    for (const auto& op : ops) out.push_back(op.value("path", ""));
    return out;
  }

  using Decision = std::pair<std::string, std::string>;
  std::vector<api::Migration> cached_;
  std::map<std::string, api::Migration> fresh_;
  std::vector<std::string> cache_reads_, fresh_reads_;
  std::vector<Decision> decisions_;
};

// --- guard ---------------------------------------------------------------

TEST_F(PodAdmissionTest, GuardDeniesATenantCreatingARestorePod) {
  json r = admission().guard(create(pod({{"ferry.dev/restore-from", "mig-uid-1"}}), kTenant));
  EXPECT_FALSE(r.value("allowed", true)) << r.dump();
  EXPECT_EQ(r["status"]["code"], 403);
  EXPECT_EQ(r["status"]["reason"], "Forbidden");
  const std::string message = r["status"]["message"];
  EXPECT_NE(message.find("ferry.dev/restore-from"), std::string::npos) << message;
  EXPECT_NE(message.find(kTenant), std::string::npos) << "names the user: " << message;
  EXPECT_FALSE(r.contains("patch"));
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"guard", "denied"}}));
}

TEST_F(PodAdmissionTest, GuardDeniesTheAnnotationEvenWhenEmptyOrAmongOthers) {
  for (const json& annotations :
       {json{{"ferry.dev/restore-from", ""}},
        json{{"team", "shop"}, {"ferry.dev/restore-from", "mig-uid-1"}}}) {
    json r = admission().guard(create(pod(annotations), kTenant));
    EXPECT_FALSE(r.value("allowed", true)) << annotations.dump();
  }
}

TEST_F(PodAdmissionTest, GuardAllowsTheOperatorToCreateARestorePod) {
  json r = admission().guard(create(pod({{"ferry.dev/restore-from", "mig-uid-1"}}), kOperator));
  EXPECT_TRUE(r.value("allowed", false)) << r.dump();
  EXPECT_FALSE(r.contains("patch"));
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"guard", "allowed"}}));
}

TEST_F(PodAdmissionTest, GuardTheOperatorUserIsTheConfiguredOne) {
  PodAdmission a = admission("system:serviceaccount:other:ferry");
  EXPECT_FALSE(
      a.guard(create(pod({{"ferry.dev/restore-from", "u"}}), kOperator)).value("allowed", true));
  EXPECT_TRUE(
      a.guard(create(pod({{"ferry.dev/restore-from", "u"}}), "system:serviceaccount:other:ferry"))
          .value("allowed", false));
}

TEST_F(PodAdmissionTest, GuardAllowsPodsWithoutTheAnnotation) {
  EXPECT_TRUE(admission().guard(create(pod(), kTenant)).value("allowed", false));
  EXPECT_TRUE(admission()
                  .guard(create(pod({{"ferry.dev/migration", "m"}, {"x", "y"}}), kTenant))
                  .value("allowed", false))
      << "only restore-from is guarded";
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"guard", "allowed"}, {"guard", "allowed"}}));
}

TEST_F(PodAdmissionTest, GuardDeniesAddingChangingOrRemovingTheAnnotationEvenForTheOperator) {
  const json with = pod({{"ferry.dev/restore-from", "mig-uid-1"}, {"team", "shop"}});
  const json changed = pod({{"ferry.dev/restore-from", "mig-uid-2"}, {"team", "shop"}});
  const json without = pod({{"team", "shop"}});
  const json no_annotations = pod();
  struct Case {
    const char* what;
    json old_object, object;
  };
  for (const Case& c : {Case{"add", without, with}, Case{"add to none", no_annotations, with},
                        Case{"change", with, changed}, Case{"remove", with, without},
                        Case{"remove all", with, no_annotations}}) {
    for (const char* user : {kTenant, kOperator}) {
      json r = admission().guard(update(c.old_object, c.object, user));
      EXPECT_FALSE(r.value("allowed", true)) << c.what << " by " << user;
      EXPECT_EQ(r.value(json::json_pointer("/status/code"), 0), 403) << c.what;
      const std::string message = r.value(json::json_pointer("/status/message"), "");
      EXPECT_NE(message.find("ferry.dev/restore-from"), std::string::npos) << message;
    }
  }
  EXPECT_EQ(decisions_.size(), 10u);
  for (const auto& d : decisions_) EXPECT_EQ(d, Decision("guard", "denied"));
}

TEST_F(PodAdmissionTest, GuardAllowsUpdatesKeepingTheAnnotation) {
  const json old_object = pod({{"ferry.dev/restore-from", "mig-uid-1"}});
  json object = old_object;
  object["metadata"]["annotations"]["ferry.dev/snapshot-ready"] = "true";
  object["metadata"]["labels"] = {{"app", "web"}};
  for (const char* user : {kTenant, kOperator}) {
    EXPECT_TRUE(admission().guard(update(old_object, object, user)).value("allowed", false))
        << user;
  }
  EXPECT_TRUE(admission()
                  .guard(update(pod({{"a", "b"}}), pod({{"a", "c"}}), kTenant))
                  .value("allowed", false))
      << "other annotations are not guarded";
  EXPECT_TRUE(admission().guard(update(pod(), pod(), kTenant)).value("allowed", false));
}

// --- steer: RuntimeClass and readiness gate ------------------------------

TEST_F(PodAdmissionTest, SteerAddsTheRuntimeClassAndTheServingGate) {
  const json object = pod();
  json r = admission().steer(create(object, kTenant));
  json ops = patch_of(r);
  EXPECT_EQ(paths(ops),
            (std::vector<std::string>{"/spec/runtimeClassName", "/spec/readinessGates"}))
      << ops.dump();
  json p = patched(object, r);
  EXPECT_EQ(p["spec"]["runtimeClassName"], "ferry");
  EXPECT_EQ(p["spec"]["readinessGates"], json::parse(R"([{"conditionType":"ferry.dev/serving"}])"))
      << p["spec"].dump();
  EXPECT_FALSE(p["spec"].contains("nodeName")) << "a pod nobody waits for is not pinned";
  EXPECT_FALSE(p["metadata"].contains("annotations"));
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"steer", "patched"}}));
}

TEST_F(PodAdmissionTest, SteerLeavesAnExistingRuntimeClassAlone) {
  json object = pod();
  object["spec"]["runtimeClassName"] = "kata";
  json r = admission().steer(create(object, kTenant));
  EXPECT_EQ(paths(patch_of(r)), (std::vector<std::string>{"/spec/readinessGates"}));
  EXPECT_EQ(patched(object, r)["spec"]["runtimeClassName"], "kata");
}

TEST_F(PodAdmissionTest, SteerAppendsToExistingReadinessGates) {
  json object = pod();
  object["spec"]["readinessGates"] = {{{"conditionType", "example.com/warm"}}};
  json r = admission().steer(create(object, kTenant));
  json ops = patch_of(r);
  ASSERT_EQ(ops.size(), 2u) << ops.dump();
  EXPECT_EQ(ops[1]["op"], "add");
  EXPECT_EQ(ops[1]["path"], "/spec/readinessGates/-");
  EXPECT_EQ(patched(object, r)["spec"]["readinessGates"],
            json::parse(R"([{"conditionType":"example.com/warm"},
                            {"conditionType":"ferry.dev/serving"}])"));
}

TEST_F(PodAdmissionTest, SteerAllowsAPodThatHasEverythingWithoutAPatch) {
  json object = pod();
  object["spec"]["runtimeClassName"] = "ferry";
  object["spec"]["readinessGates"] = {{{"conditionType", "ferry.dev/serving"}}};
  json r = admission().steer(create(object, kTenant));
  EXPECT_TRUE(r.value("allowed", false));
  EXPECT_FALSE(r.contains("patch")) << r.dump();
  EXPECT_FALSE(r.contains("patchType")) << r.dump();
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"steer", "allowed"}}));
}

TEST_F(PodAdmissionTest, SteerOnlyActsOnCreate) {
  json r = admission().steer(update(pod(), pod(), kTenant));
  EXPECT_TRUE(r.value("allowed", false));
  EXPECT_FALSE(r.contains("patch"));
  EXPECT_TRUE(cache_reads_.empty());
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"steer", "allowed"}}));
}

// --- steer: an owner's replacement ---------------------------------------

TEST_F(PodAdmissionTest, SteerMarksTheReplicaSetsReplacementForRestore) {
  cached_ = {migration({})};
  const json object = owned_pod("ReplicaSet", "rs-uid");
  json r = admission().steer(create(object, "system:serviceaccount:kube-system:replicaset"));
  json ops = patch_of(r);
  EXPECT_EQ(paths(ops), (std::vector<std::string>{"/spec/runtimeClassName", "/spec/readinessGates",
                                                  "/spec/nodeName", "/metadata/annotations",
                                                  "/metadata/annotations/ferry.dev~1restore-from",
                                                  "/metadata/annotations/ferry.dev~1migration"}))
      << ops.dump();
  json p = patched(object, r);
  EXPECT_EQ(p["spec"]["nodeName"], "node-2");
  EXPECT_EQ(p["metadata"]["annotations"],
            json({{"ferry.dev/restore-from", "mig-uid-1"}, {"ferry.dev/migration", "m-web"}}));
  EXPECT_EQ(p["spec"]["runtimeClassName"], "ferry");
  EXPECT_EQ(cache_reads_, (std::vector<std::string>{"shop"}));
  EXPECT_TRUE(fresh_reads_.empty()) << "the cache was current";
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"steer", "patched"}}));
}

TEST_F(PodAdmissionTest, SteerKeepsTheReplacementsOwnAnnotations) {
  cached_ = {migration({})};
  const json object = owned_pod("ReplicaSet", "rs-uid", "", {{"prometheus.io/scrape", "true"}});
  json r = admission().steer(create(object, kTenant));
  for (const auto& path : paths(patch_of(r))) {
    EXPECT_NE(path, "/metadata/annotations") << "would replace the pod's annotations";
  }
  json p = patched(object, r);
  EXPECT_EQ(p["metadata"]["annotations"], json({{"prometheus.io/scrape", "true"},
                                                {"ferry.dev/restore-from", "mig-uid-1"},
                                                {"ferry.dev/migration", "m-web"}}));
}

TEST_F(PodAdmissionTest, SteerUsesTheRequestNamespace) {
  cached_ = {migration({})};
  json object = owned_pod("ReplicaSet", "rs-uid");
  object["metadata"].erase("namespace");  // as a create without namespace in the body
  json request = create(object, kTenant);
  request["namespace"] = "shop";
  admission().steer(request);
  EXPECT_EQ(cache_reads_, (std::vector<std::string>{"shop"}));
}

TEST_F(PodAdmissionTest, SteerMatchesAStatefulSetPodOnlyByItsName) {
  cached_ = {migration({.pod_name = "db-0", .owner_kind = "StatefulSet", .owner_uid = "sts-uid"})};
  const json other = owned_pod("StatefulSet", "sts-uid", "db-1");
  json r = admission().steer(create(other, kTenant));
  EXPECT_FALSE(patched(other, r)["spec"].contains("nodeName")) << "db-1 is not db-0";

  const json same = owned_pod("StatefulSet", "sts-uid", "db-0");
  json p = patched(same, admission().steer(create(same, kTenant)));
  EXPECT_EQ(p["spec"]["nodeName"], "node-2");
  EXPECT_EQ(p["metadata"]["annotations"]["ferry.dev/restore-from"], "mig-uid-1");
  EXPECT_EQ(p["metadata"]["annotations"]["ferry.dev/migration"], "m-web");
}

TEST_F(PodAdmissionTest, SteerDoesNotMarkPodsNobodyWaitsFor) {
  struct Case {
    const char* what;
    MigrationFields fields;
  };
  for (const Case& c : {
           Case{"still checkpointing", {.phase = "Checkpointing"}},
           Case{"source not deleted", {.source_deleted = nullptr}},
           Case{"source deletion not confirmed", {.source_deleted = "False"}},
           Case{"replacement already chosen", {.target_pod = "web-7d9f-xyz"}},
           Case{"another owner", {.owner_uid = "other-rs"}},
           Case{"already succeeded", {.phase = "Succeeded"}},
           Case{"rolled back", {.phase = "RolledBack"}},
       }) {
    cached_ = {migration(c.fields)};
    const json object = owned_pod("ReplicaSet", "rs-uid");
    json p = patched(object, admission().steer(create(object, kTenant)));
    EXPECT_FALSE(p["spec"].contains("nodeName")) << c.what;
    EXPECT_FALSE(p["metadata"].contains("annotations")) << c.what << ": " << p.dump();
  }
}

TEST_F(PodAdmissionTest, SteerIgnoresOwnersThatAreNotTheController) {
  cached_ = {migration({})};
  json object = owned_pod("ReplicaSet", "rs-uid");
  object["metadata"]["ownerReferences"][0]["controller"] = false;
  json p = patched(object, admission().steer(create(object, kTenant)));
  EXPECT_FALSE(p["spec"].contains("nodeName"));
  json bare = pod();
  bare["metadata"]["labels"] = {{"ferry.dev/migratable", "true"}};
  p = patched(bare, admission().steer(create(bare, kTenant)));
  EXPECT_FALSE(p["spec"].contains("nodeName"));
  EXPECT_TRUE(cache_reads_.empty()) << "no owner, no lookup";
}

TEST_F(PodAdmissionTest, SteerPicksTheWaitingMigrationAmongOthers) {
  cached_ = {migration({.name = "m-old", .uid = "old", .phase = "Succeeded"}),
             migration({.name = "m-other", .uid = "other", .owner_uid = "other-rs"}),
             migration({.name = "m-web", .uid = "mig-uid-1", .target_node = "node-3"})};
  const json object = owned_pod("ReplicaSet", "rs-uid");
  json p = patched(object, admission().steer(create(object, kTenant)));
  EXPECT_EQ(p["spec"]["nodeName"], "node-3");
  EXPECT_EQ(p["metadata"]["annotations"]["ferry.dev/migration"], "m-web");
}

TEST_F(PodAdmissionTest, SteerAsksTheApiServerWhenTheCacheLags) {
  // The operator deleted the source a moment ago; the cache still shows
  // the Migration checkpointing.
  cached_ = {migration({.phase = "Checkpointing", .source_deleted = nullptr})};
  fresh_["m-web"] = migration({});
  const json object = owned_pod("ReplicaSet", "rs-uid");
  json r = admission().steer(create(object, kTenant));
  json p = patched(object, r);
  EXPECT_EQ(p["spec"]["nodeName"], "node-2");
  EXPECT_EQ(p["metadata"]["annotations"]["ferry.dev/restore-from"], "mig-uid-1");
  EXPECT_EQ(fresh_reads_, (std::vector<std::string>{"shop/m-web"}));
  EXPECT_EQ(decisions_, (std::vector<Decision>{{"steer", "patched"}}));
}

TEST_F(PodAdmissionTest, SteerTrustsTheFreshReadOnlyWhenItWaitsToo) {
  cached_ = {migration({.phase = "Checkpointing", .source_deleted = nullptr})};
  const json object = owned_pod("ReplicaSet", "rs-uid");
  // Not found (deleted meanwhile), still checkpointing, or already served.
  for (int i = 0; i < 3; ++i) {
    fresh_.clear();
    if (i == 1) fresh_["m-web"] = migration({.phase = "Checkpointing"});
    if (i == 2) fresh_["m-web"] = migration({.target_pod = "web-7d9f-first"});
    json p = patched(object, admission().steer(create(object, kTenant)));
    EXPECT_FALSE(p["spec"].contains("nodeName")) << i;
  }
  EXPECT_EQ(fresh_reads_.size(), 3u);
}

TEST(AwaitsReplacementTest, RestoringWithTheSourceDeletedAndNoReplacementYet) {
  EXPECT_TRUE(awaits_replacement(migration({})));
  EXPECT_FALSE(awaits_replacement(migration({.phase = "Checkpointing"})));
  EXPECT_FALSE(awaits_replacement(migration({.phase = "Switching"})));
  EXPECT_FALSE(awaits_replacement(migration({.source_deleted = nullptr})));
  EXPECT_FALSE(awaits_replacement(migration({.source_deleted = "False"})));
  EXPECT_FALSE(awaits_replacement(migration({.target_pod = "web-new"})));
  EXPECT_FALSE(awaits_replacement(migration({.owner_kind = "", .owner_uid = ""})))
      << "a bare pod's replacement is the operator's own";
}

}  // namespace
}  // namespace ferry::operator_
