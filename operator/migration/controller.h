// The Migration controller (DESIGN.md §3), level-triggered in the
// controller-runtime way: informers on Migrations, Pods and Nodes feed a
// work queue of Migration keys, and reconcile(key) reads only the caches,
// decides, and writes status only when it changed.
//
// What it does today: admission (the pod exists, runs, is on the ferry
// RuntimeClass, not on the host network), target selection with reasons,
// cancellation before the switch, and the Failed/RolledBack final states
// with a condition, a failure reason and an Event. It hands a scheduled
// Migration to the agents by moving it to Checkpointing with source and
// target nodes in status; the agent-driven phases come next (issue #6).
#pragma once

#include <atomic>
#include <memory>
#include <stop_token>
#include <string>

#include "api/migration.h"
#include "kube/client.h"
#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/workqueue.h"

namespace ferry::operator_ {

inline const kube::ResourceType kMigrations{"ferry.dev", "v1alpha1", "migrations", "Migration",
                                            true};

class MigrationController {
 public:
  explicit MigrationController(kube::Client& client, std::string instance = "ferry-operator");

  // Starts the informers, waits for their caches, then runs `workers`
  // workers until `stop`. Returns once everything has stopped.
  void run(std::stop_token stop, int workers = 2);
  bool synced() const { return synced_.load(); }

  // One reconcile of a Migration key ("namespace/name"), reading caches.
  Status reconcile(const std::string& key);

 private:
  Status fail(const api::Migration& m, api::MigrationStatus status, const Status& why,
              api::Phase phase);
  Status write_status(const api::Migration& m, const api::MigrationStatus& status);

  kube::Client& client_;
  kube::Informer migrations_;
  kube::Informer pods_;
  kube::Informer nodes_;
  kube::WorkQueue queue_;
  kube::EventRecorder events_;
  std::atomic<bool> synced_{false};
};

}  // namespace ferry::operator_
