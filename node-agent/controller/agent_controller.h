// The agent's Kubernetes loop (DESIGN.md §1, KubeVirt's virt-handler
// pattern): it watches only the Migrations labelled with its node (as
// source or as target) and the Pods bound to its node, acts on the node,
// and reports back into Migration.status. It never talks to the operator.
//
// As the source, for a Migration in Checkpointing: hold the Migration with
// the ferry.dev/snapshot finalizer, take the pod out of its Services
// (readiness gate ferry.dev/serving False), freeze and dump every
// container into the shared snapshot store bound to the replacement pod
// (binding_for), then move the Migration to Restoring (or report the
// failure with CRIU's log; the operator rolls back). Later: RolledBack ->
// thaw and serve again; the source pod deleted (owned: in Restoring; bare:
// during the switch) -> kill it while frozen; final -> remove the snapshot
// and the finalizer (kept when the restore of a deleted owned source failed).
// As the target: a replacement pod's gate opens as soon as the agent sees
// the pod (it cannot be Ready before its restored containers run, so
// kubelet lets it into its Services the moment the restore succeeded); for
// a Migration in Restoring, grant an owned source's snapshot to the
// replacement its owner created; once the replacement's containers run, move
// it to Switching; a restore that ferry-runc refused or that failed is
// reported as the failure.
// Every pod on the node that carries the ferry.dev/serving gate and is not
// part of a migration gets the condition True.
//
// Each Migration's work runs under its own work-queue key, so one
// Migration's steps never run concurrently, and a record on disk
// (records.h) lets a restarted agent finish or roll back.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

#include "api/migration.h"
#include "checkpoint/oci_runtime.h"
#include "controller/records.h"
#include "kube/client.h"
#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/workqueue.h"
#include "store/manifest.h"

namespace ferry::agent {

struct CheckpointSample {
  bool ok = false;
  double freeze_seconds = 0, dump_seconds = 0, publish_seconds = 0;
  uint64_t bytes = 0;
};

struct AgentOptions {
  std::string node;
  std::string snapshot_root = "/var/lib/ferry-shared/snapshots";
  std::string work_dir = "/var/lib/ferry/work";  // CRIU logs, node-local
  std::string records_dir = "/var/lib/ferry/records";
  std::string pod_log_root = "/var/log/pods";  // kubelet's container logs (carried)
  std::string criu_version;
  std::string runtime_version;
  std::string criu_network_lock;  // checkpoint::DumpRequest::network_lock
  store::DigestAlgorithm snapshot_digest = store::kDefaultDigestAlgorithm;
  std::function<void(const CheckpointSample&)> on_checkpoint;  // metrics
  kube::WorkQueueMetrics queue_metrics;
};

class AgentController {
 public:
  AgentController(kube::Client& client, checkpoint::OciRuntime& runtime, AgentOptions options);

  // Informers, then recovery of on-disk records, then workers, until stop.
  void run(std::stop_token stop, int workers = 2);
  bool synced() const { return synced_.load(); }

  // One Migration ("namespace/name"), as source and/or target.
  Status reconcile_migration(const std::string& key);
  // One pod's readiness gate ("namespace/name").
  Status reconcile_pod(const std::string& key);

 private:
  Status source_side(const api::Migration& m, std::optional<Record> record);
  Status target_side(const api::Migration& m);
  Status checkpoint(const api::Migration& m);
  Status release(const Record& record, bool thaw);
  Status report_failure(const api::Migration& m, const Status& why, const std::string& excerpt);
  // Re-reads and retries on conflict; `mutate` returns false for "nothing to do".
  Status update_status(const std::string& ns, const std::string& name,
                       const std::function<bool(api::MigrationStatus&)>& mutate);
  Status set_serving(const kube::json& pod, bool serving, const std::string& reason,
                     const std::string& message);
  Status remove_finalizer(const std::string& ns, const std::string& name);
  kube::ObjectPtr migration(const std::string& key) const;

  kube::Client& client_;
  checkpoint::OciRuntime& runtime_;
  AgentOptions options_;
  RecordStore records_;
  kube::Informer as_source_;
  kube::Informer as_target_;
  kube::Informer pods_;
  kube::WorkQueue queue_;
  kube::EventRecorder events_;
  std::atomic<bool> synced_{false};
};

// True when the operator is rolling `m` back (cancel, deletion, a reported
// failure, a timeout) and it has not switched: the source will thaw.
bool rolling_back(const api::Migration& m);

// What the source's snapshot of `container` is bound to: the replacement
// pod the operator created (bare pod), or, for an owned pod, the namespace
// (and a StatefulSet pod's fixed name) with the pod uid left to a grant by
// the target agent once the owner has created the replacement.
store::Binding binding_for(const api::Migration& m, const std::string& container);
// True when `pod` declares the ferry.dev/serving readiness gate.
bool has_serving_gate(const kube::json& pod);
// The restore failure kubelet reports for a replacement pod's container, if
// any: a create/start error whose message comes from ferry-runc and is not
// the "snapshot not published yet" refusal. Empty when there is none.
std::string restore_failure(const kube::json& pod);

}  // namespace ferry::agent
