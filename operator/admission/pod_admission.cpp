#include "admission/pod_admission.h"

#include <algorithm>

#include "api/annotations.h"
#include "webhook/webhook_server.h"

namespace ferry::operator_ {
namespace {

using kube::json;

std::string str(const json& j, const char* pointer) {
  return j.value(json::json_pointer(pointer), std::string());
}

// "ferry.dev/restore-from" as a JSON pointer token.
std::string escape(const std::string& token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string annotation(const json& pod, const char* key) {
  const json* a = nullptr;
  if (pod.contains("metadata") && pod["metadata"].contains("annotations")) {
    a = &pod["metadata"]["annotations"];
  }
  if (a == nullptr || !a->is_object() || !a->contains(key) || !(*a)[key].is_string()) return {};
  return (*a)[key].get<std::string>();
}

bool has_annotation(const json& pod, const char* key) {
  return pod.contains("metadata") && pod["metadata"].contains("annotations") &&
         pod["metadata"]["annotations"].is_object() && pod["metadata"]["annotations"].contains(key);
}

}  // namespace

bool awaits_replacement(const api::Migration& m) {
  if (m.status.phase != api::Phase::kRestoring || m.status.owner_uid.empty() ||
      !m.status.target_pod.empty()) {
    return false;
  }
  return api::condition_true(m.status.conditions, api::kSourceDeletedCondition);
}

json PodAdmission::decided(const std::string& webhook, json response) const {
  if (options_.on_decision) {
    std::string decision = !response.value("allowed", false) ? "denied"
                           : response.contains("patch")      ? "patched"
                                                             : "allowed";
    options_.on_decision(webhook, decision);
  }
  return response;
}

json PodAdmission::guard(const json& request) const {
  const std::string op = request.value("operation", "");
  const json object = request.value("object", json::object());
  const std::string user = str(request, "/userInfo/username");
  const char* key = api::kRestoreFromAnnotation;
  if (op == "CREATE" && has_annotation(object, key) && user != options_.operator_user) {
    return decided("guard",
                   webhook::deny(403, "Forbidden",
                                 std::string("only Ferry may create a pod with the ") + key +
                                     " annotation: it restores a snapshot's process "
                                     "memory into the pod (user " +
                                     user + ")"));
  }
  if (op == "UPDATE") {
    const json old = request.value("oldObject", json::object());
    if (has_annotation(old, key) != has_annotation(object, key) ||
        annotation(old, key) != annotation(object, key)) {
      return decided("guard", webhook::deny(403, "Forbidden",
                                            std::string("the ") + key +
                                                " annotation of a pod cannot be added, changed or "
                                                "removed after it was created (user " +
                                                user + ")"));
    }
  }
  return decided("guard", webhook::allow());
}

std::optional<api::Migration> PodAdmission::replaced_by(const json& pod,
                                                        const std::string& ns) const {
  std::string owner_uid, owner_kind;
  for (const auto& o : pod.value(json::json_pointer("/metadata/ownerReferences"), json::array())) {
    if (o.value("controller", false)) {
      owner_uid = o.value("uid", "");
      owner_kind = o.value("kind", "");
    }
  }
  if (owner_uid.empty() || !options_.cached_migrations) return std::nullopt;
  // A generated name is empty here (the API server fills it in after the
  // mutating webhooks); a StatefulSet's pod has its fixed name.
  const std::string name = str(pod, "/metadata/name");
  auto matches = [&](const api::Migration& m) {
    return m.status.owner_uid == owner_uid &&
           (owner_kind != "StatefulSet" || m.spec.pod_name == name);
  };
  for (const auto& m : options_.cached_migrations(ns)) {
    if (!matches(m) || (m.status.phase && api::is_final(*m.status.phase))) continue;
    if (awaits_replacement(m)) return m;
    // The cache may lag behind the operator that just deleted the source:
    // ask the API server about this one.
    if (options_.fresh_migration) {
      auto fresh = options_.fresh_migration(ns, m.name);
      if (fresh.ok() && matches(*fresh) && awaits_replacement(*fresh)) return *fresh;
    }
  }
  return std::nullopt;
}

json PodAdmission::steer(const json& request) const {
  if (request.value("operation", "") != "CREATE") return decided("steer", webhook::allow());
  const json pod = request.value("object", json::object());
  const std::string ns = request.value("namespace", str(pod, "/metadata/namespace"));
  json ops = json::array();
  if (str(pod, "/spec/runtimeClassName").empty()) {
    ops.push_back({{"op", "add"}, {"path", "/spec/runtimeClassName"}, {"value", "ferry"}});
  }
  const json gates = pod.value(json::json_pointer("/spec/readinessGates"), json::array());
  const bool gated = std::any_of(gates.begin(), gates.end(), [](const json& g) {
    return g.value("conditionType", "") == api::kServingCondition;
  });
  if (!gated) {
    const json gate = {{"conditionType", api::kServingCondition}};
    if (pod.contains("spec") && pod["spec"].contains("readinessGates")) {
      ops.push_back({{"op", "add"}, {"path", "/spec/readinessGates/-"}, {"value", gate}});
    } else {
      ops.push_back({{"op", "add"}, {"path", "/spec/readinessGates"}, {"value", json{gate}}});
    }
  }
  if (auto m = replaced_by(pod, ns)) {
    ops.push_back({{"op", "add"}, {"path", "/spec/nodeName"}, {"value", m->status.target_node}});
    if (!pod.contains("metadata") || !pod["metadata"].contains("annotations") ||
        !pod["metadata"]["annotations"].is_object()) {
      ops.push_back({{"op", "add"}, {"path", "/metadata/annotations"}, {"value", json::object()}});
    }
    ops.push_back({{"op", "add"},
                   {"path", "/metadata/annotations/" + escape(api::kRestoreFromAnnotation)},
                   {"value", m->uid}});
    ops.push_back({{"op", "add"},
                   {"path", "/metadata/annotations/" + escape(api::kMigrationAnnotation)},
                   {"value", m->name}});
  }
  return decided("steer", webhook::allow_with_patch(ops));
}

}  // namespace ferry::operator_
