// The Migration controller (DESIGN.md §3), level-triggered in the
// controller-runtime way: informers on Migrations, Pods and Nodes feed a
// work queue of Migration keys, and reconcile(key) reads the caches,
// decides, and writes only what changed. One exception: admission lists the
// MigrationPolicies from the API server, since the settings it fixes there
// must see a policy applied just before the Migration.
//
// The operator owns the phases around the agents' work:
//   Pending/Scheduling  admission (check_pod), effective settings (spec,
//                       MigrationPolicy, defaults: policy.h), concurrency
//                       limits, target choice; creates the replacement pod on the target
//                       (bare pods) and labels the Migration with both
//                       nodes, then hands over: Checkpointing.
//   Checkpointing       the source agent freezes, dumps and publishes, then
//                       moves the Migration to Restoring (or reports a
//                       failure in status.failure).
//   Restoring           owned source (ReplicaSet, StatefulSet): records
//                       SourceDeleted, deletes the frozen source (its agent
//                       kills it frozen), and waits for the pod its owner
//                       creates, which the admission webhook steered to the
//                       target and marked (operator/admission); then, as for
//                       a bare pod: marks the replacement snapshot-ready, so
//                       kubelet retries its container create (the restore)
//                       at once; the target agent grants it the snapshot,
//                       sees it running and moves to Switching.
//   Switching           deletes the frozen source pod (its agent kills it
//                       while frozen), then Succeeded.
// Rollback, before Switching and before an owned source is deleted, on cancel, deletion of the
// Migration, an agent's failure or a timeout: the replacement pod is deleted and gone first, then
// RolledBack, upon which the source agent thaws the source. So the source and a restored copy never
// run at the same time.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>

#include "api/migration.h"
#include "kube/client.h"
#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/workqueue.h"
#include "migration/policy.h"

namespace ferry::operator_ {

inline const kube::ResourceType kMigrations{"ferry.dev", "v1alpha1", "migrations", "Migration",
                                            true};
inline const kube::ResourceType kMigrationPolicies{"ferry.dev", "v1alpha1", "migrationpolicies",
                                                   "MigrationPolicy", false};

struct ControllerOptions {
  std::string instance = "ferry-operator";  // Events' reportingInstance
  int max_in_flight = 4;                    // Migrations past admission, cluster-wide
  int max_in_flight_per_node = 2;           // ... with a given node as source or target
  // A replacement pod still terminating this long on a NotReady node is
  // force-deleted during a rollback (its kubelet cannot confirm).
  std::chrono::seconds force_delete_after{30};
  // Timeouts of Migrations that neither set them nor match a policy.
  DefaultTimeouts default_timeouts;
  // Called once per Migration reaching a final phase (metrics).
  std::function<void(const api::Migration&, const api::MigrationStatus&)> on_final;
  // Called after every reconcile with its outcome and latency (metrics).
  std::function<void(bool ok, std::chrono::duration<double>)> on_reconcile;
  kube::WorkQueueMetrics queue_metrics;
};

class MigrationController {
 public:
  explicit MigrationController(kube::Client& client, ControllerOptions options = {});

  // Starts the informers, waits for their caches, then runs `workers`
  // workers until `stop`. Returns once everything has stopped.
  void run(std::stop_token stop, int workers = 2);
  bool synced() const { return synced_.load(); }

  // One reconcile of a Migration key ("namespace/name"), reading caches.
  Status reconcile(const std::string& key);

  // Non-final Migrations by phase name (for the ferry_migrations gauge).
  std::map<std::string, int> phase_counts() const;

 private:
  Status admit(const api::Migration& m, api::MigrationStatus s);
  Status announce_snapshot(const api::Migration& m, api::MigrationStatus s);
  // Owned source: deletes it (once SourceDeleted is recorded) and picks up
  // the replacement its owner created into s.target_pod.
  Status await_owner_replacement(const api::Migration& m, api::MigrationStatus& s);
  Status switch_over(const api::Migration& m, const api::MigrationStatus& s);
  Status roll_back(const api::Migration& m, api::MigrationStatus s, const Status& why);
  Status finish(const api::Migration& m, api::MigrationStatus s, api::Phase phase,
                const Status& why);
  Result<kube::json> ensure_replacement_pod(const api::Migration& m, const kube::json& source,
                                            const std::string& target_node);
  Status write_status(const api::Migration& m, const api::MigrationStatus& status,
                      const std::string& resource_version = "");
  void event(const api::Migration& m, const std::string& type, const std::string& reason,
             const std::string& action, const std::string& note);
  // Why a Migration that has not switched yet must roll back (OK: it need not).
  Status rollback_reason(const api::Migration& m) const;

  kube::Client& client_;
  ControllerOptions options_;
  kube::Informer migrations_;
  kube::Informer pods_;
  kube::Informer nodes_;
  kube::WorkQueue queue_;
  kube::EventRecorder events_;
  std::atomic<bool> synced_{false};

  // Admitted by this process and not yet past Pending in the cache.
  struct Admission {
    std::string key, name, ns, pod, source, target;
  };
  std::mutex admit_mu_;
  std::map<std::string, Admission> admitted_;  // by Migration uid
};

// The replacement for bare pod `source` on `target_node`, restoring from
// Migration `m`: same labels, annotations and spec, pinned to the target,
// on the ferry RuntimeClass, with the ferry.dev/serving readiness gate and
// the restore annotation. Pure, for tests.
kube::json replacement_pod(const api::Migration& m, const kube::json& source,
                           const std::string& target_node);
// Its name: the source's, with a suffix from the Migration's UID.
std::string replacement_pod_name(const std::string& source_name, const std::string& migration_uid);

}  // namespace ferry::operator_
