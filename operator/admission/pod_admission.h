// The pod admission webhooks (DESIGN.md §2, §3 step 5), as pure decisions
// on AdmissionReview requests so they are unit-tested without a server:
//
//   guard  (every pod, CREATE and UPDATE): only Ferry's operator may create
//          a pod carrying ferry.dev/restore-from, and nobody may add, change
//          or remove it later. The annotation makes ferry-runc restore a
//          snapshot's memory into the pod; a tenant setting it could ask for
//          someone else's process state. (ferry-runc checks the snapshot's
//          binding too, so this is the first of two locks.)
//   steer  (opted-in pods, label ferry.dev/migratable=true, CREATE): gives
//          the pod the ferry RuntimeClass and the ferry.dev/serving
//          readiness gate; and when its owner (ReplicaSet, StatefulSet)
//          creates it to replace a source Ferry deleted for a Migration, pins
//          it to the Migration's target node and marks it for restore.
//
// Failure policies (deploy/README.md): guard Ignore, steer Fail, scoped by
// objectSelector to opted-in pods. An outage of Ferry then never blocks
// ordinary pods; it blocks creating opted-in pods (their owners retry),
// because an unmarked replacement would start empty and lose the state.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "api/migration.h"
#include "kube/client.h"
#include "status/status.h"

namespace ferry::operator_ {

struct PodAdmissionOptions {
  // The operator's own user, the only one allowed to create pods with the
  // restore annotation (its bare-pod replacements).
  std::string operator_user = "system:serviceaccount:ferry-system:ferry-operator";
  // Migrations of a namespace, from a cache (may lag a little).
  std::function<std::vector<api::Migration>(const std::string& ns)> cached_migrations;
  // One Migration read from the API server, for when the cache lags.
  std::function<Result<api::Migration>(const std::string& ns, const std::string& name)>
      fresh_migration;
  // Called with (webhook, decision) for metrics: decision is one of
  // allowed, patched, denied.
  std::function<void(const std::string&, const std::string&)> on_decision;
};

class PodAdmission {
 public:
  explicit PodAdmission(PodAdmissionOptions options) : options_(std::move(options)) {}

  // AdmissionReview .request in, .response (without uid) out.
  kube::json guard(const kube::json& request) const;
  kube::json steer(const kube::json& request) const;

 private:
  // The Migration whose owner created `pod` to replace its deleted source.
  std::optional<api::Migration> replaced_by(const kube::json& pod, const std::string& ns) const;
  kube::json decided(const std::string& webhook, kube::json response) const;

  PodAdmissionOptions options_;
};

// True when `m` waits for its owned source's replacement: Restoring, source
// deleted (condition SourceDeleted), no replacement chosen yet.
bool awaits_replacement(const api::Migration& m);

}  // namespace ferry::operator_
