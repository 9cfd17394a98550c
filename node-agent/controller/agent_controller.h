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
// PostCopy differs on both sides. The source dumps everything but memory,
// publishes it, and keeps one CRIU page server per container running in
// this process (PageTransfer) while the target restores at once and pulls
// the pages; when every server has ended well it sets the Migration's
// PagesTransferred condition, and a failed or lost transfer (a restarted
// agent has lost its servers) is reported as the failure, so the operator
// rolls back (the target's ferry-runc has killed a copy left without its
// pages). The target, once its containers run, lets the pod serve but moves
// the Migration to Switching only when PagesTransferred is True: until
// then the frozen source holds memory the restored copy needs.
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
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "api/migration.h"
#include "checkpoint/criu_features.h"
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
  // PostCopy as the source: the IPv4 address this agent's CRIU serves pages
  // on (its pod IP; target nodes' `criu lazy-pages` connect to it). Empty:
  // PostCopy Migrations from this node fail before anything is frozen.
  std::string page_server_address;
  // What this node's CRIU and kernel can do (detect_criu_features). A
  // PostCopy source needs what check_mode_supported asks (userfaultfd, and
  // GnuTLS: pages go only over TLS), checked before anything is frozen;
  // where CRIU has lazy_dump_read, it reads lazy pages from the frozen
  // tasks on request instead of splicing them while frozen.
  checkpoint::CriuFeatures criu_features;
  std::function<void(const CheckpointSample&)> on_checkpoint;  // metrics
  // PostCopy, once per transfer this agent served: how it ended and how
  // long its page servers ran after the publish (metrics).
  std::function<void(bool ok, double seconds)> on_page_transfer;
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
  // PostCopy, as the source: what the page transfer of `record` came to.
  Status follow_transfer(const api::Migration& m, const Record& record);
  Status release(const Record& record, bool thaw);
  // Stops and forgets the page servers of `migration_uid` (none: no-op).
  void drop_transfer(const std::string& migration_uid);
  // Whether this agent process runs page servers for `migration_uid`.
  bool serving_pages(const std::string& migration_uid);
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

  // PostCopy page servers this agent runs as a source, by Migration UID.
  // A watcher thread waits for them and requeues the Migration once they
  // have all ended (or one failed).
  struct PageTransfer {
    std::vector<std::unique_ptr<checkpoint::RunningCheckpoint>> servers;  // one per container
    std::vector<std::string> containers;  // their names, in the same order
    std::vector<std::string> work_dirs;   // their CRIU logs, in the same order
    std::chrono::steady_clock::time_point published;
    // Set by the watcher once every server ended or one failed (`failed`:
    // its index); guarded by transfers_mu_.
    std::optional<Status> outcome;
    size_t failed = 0;
    std::chrono::duration<double> took{};
    uint64_t served_bytes = 0;  // the pages CRIU served (its stats-dump), once ended well
    std::jthread watcher;       // last member: joined before the servers go
  };
  void watch_transfer(const std::shared_ptr<PageTransfer>& transfer, const std::string& key);
  std::mutex transfers_mu_;
  std::map<std::string, std::shared_ptr<PageTransfer>> transfers_;  // guarded by transfers_mu_
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
