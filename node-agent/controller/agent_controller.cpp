#include "controller/agent_controller.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "api/annotations.h"
#include "checkpoint/criu_stats.h"
#include "checkpoint/engine.h"
#include "checkpoint/source_snapshot.h"
#include "posix/atomic_file.h"
#include "runtime/pod_logs.h"
#include "runtime/wrapper.h"
#include "store/snapshot_store.h"

namespace ferry::agent {
namespace {

using api::Phase;
using kube::json;

const kube::ResourceType kMigrations{"ferry.dev", "v1alpha1", "migrations", "Migration", true};

std::string str(const json& j, const char* pointer) {
  return j.value(json::json_pointer(pointer), std::string());
}

bool deleting(const json& object) {
  return object.contains("metadata") && object["metadata"].contains("deletionTimestamp") &&
         !object["metadata"]["deletionTimestamp"].is_null();
}

std::string strip_runtime_prefix(const std::string& id) {
  auto at = id.find("://");
  return at == std::string::npos ? id : id.substr(at + 3);
}

// Keys: "m/<ns>/<name>" for a Migration, "p/<ns>/<name>" for a pod's gate.
std::string mkey(const std::string& ns_name) {
  return "m/" + ns_name;
}
std::string pkey(const std::string& ns_name) {
  return "p/" + ns_name;
}

std::optional<bool> serving_condition(const json& pod) {
  for (const auto& c : pod.value(json::json_pointer("/status/conditions"), json::array())) {
    if (c.value("type", "") == api::kServingCondition) return c.value("status", "") == "True";
  }
  return std::nullopt;
}

bool all_containers_running(const json& pod) {
  const json statuses = pod.value(json::json_pointer("/status/containerStatuses"), json::array());
  const json containers = pod.value(json::json_pointer("/spec/containers"), json::array());
  if (statuses.empty() || statuses.size() != containers.size()) return false;
  return std::all_of(statuses.begin(), statuses.end(), [](const json& s) {
    return s.contains("state") && s["state"].contains("running");
  });
}

bool post_copy(const api::Migration& m) {
  return m.status.effective && m.status.effective->mode == "PostCopy";
}

// A TCP port free on `address` (IPv4: runc's --page-server is
// "address:port") for a CRIU page server. The kernel picks it; CRIU binds
// it a moment later (with SO_REUSEADDR), so only a process binding that
// very port in between could take it, and the dump then fails cleanly.
Result<int> free_tcp_port(const std::string& address) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
    return Status(Code::kInvalidArgument,
                  "page server address '" + address +
                      "' is not an IPv4 address (runc's --page-server takes address:port)",
                  "BadPageServerAddress");
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return internal_error(std::string("socket: ") + std::strerror(errno));
  socklen_t len = sizeof sa;
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
                     getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  const int err = errno;
  close(fd);
  if (!bound) {
    return Status(Code::kFailedPrecondition,
                  "cannot listen for a page server on " + address + ": " + std::strerror(err),
                  "PageServerUnavailable");
  }
  return static_cast<int>(ntohs(sa.sin_port));
}

// PostCopy: this agent's page servers for a Migration are gone (it
// restarted), so the restored copy cannot get the rest of its memory.
Status transfer_lost(const std::string& node) {
  return Status(Code::kUnavailable,
                "the source agent on " + node +
                    " restarted during the PostCopy page transfer: its page servers are gone, "
                    "so the restored copy cannot get the rest of its memory; rolling back",
                "PageTransferLost");
}

// Reports a published checkpoint: its figures, and the target's turn.
bool enter_restoring(api::MigrationStatus& s, const CheckpointFigures& f) {
  if (s.phase != Phase::kCheckpointing) return false;
  s.freeze = api::format_seconds(f.freeze_seconds);
  s.checkpoint = api::format_seconds(f.dump_seconds);
  s.transfer = api::format_seconds(f.publish_seconds);
  s.bytes_checkpointed = static_cast<int64_t>(f.bytes);
  s.bytes_transferred = static_cast<int64_t>(f.bytes);
  api::enter_phase(s, Phase::kTransferring);
  api::enter_phase(s, Phase::kRestoring);  // published: the target's turn
  return true;
}

}  // namespace

store::Binding binding_for(const api::Migration& m, const std::string& container) {
  store::Binding b{.namespace_name = m.ns, .container_name = container, .migration_uid = m.uid};
  if (m.status.owner_uid.empty()) {
    b.pod_name = m.status.target_pod;  // the operator created it already
    b.pod_uid = m.status.target_pod_uid;
  } else if (m.status.owner_kind == "StatefulSet") {
    b.pod_name = m.spec.pod_name;  // same name; the uid is granted later
  }
  return b;
}

bool rolling_back(const api::Migration& m) {
  const Phase phase = m.status.phase.value_or(Phase::kPending);
  if (api::is_final(phase) || phase == Phase::kSwitching) return false;
  if (api::condition_true(m.status.conditions, api::kSourceDeletedCondition)) {
    // An owned source was deleted: a cancel can no longer undo anything
    // (the operator lets the restore finish); only a failure ends it.
    return !m.status.failure_reason.empty();
  }
  return m.spec.cancel || m.deleting || !m.status.failure_reason.empty() ||
         api::condition_true(m.status.conditions, "RollingBack");
}

bool has_serving_gate(const json& pod) {
  for (const auto& g : pod.value(json::json_pointer("/spec/readinessGates"), json::array())) {
    if (g.value("conditionType", "") == api::kServingCondition) return true;
  }
  return false;
}

std::string restore_failure(const json& pod) {
  for (const auto& s : pod.value(json::json_pointer("/status/containerStatuses"), json::array())) {
    const json waiting = s.value(json::json_pointer("/state/waiting"), json::object());
    const std::string message = waiting.value("message", "");
    if (message.find("ferry-runc") == std::string::npos) continue;
    if (message.find("no snapshot for migration") != std::string::npos) continue;  // not yet
    if (message.find("is not granted to a pod yet") != std::string::npos) continue;
    return s.value("name", "") + ": " + message;
  }
  return {};
}

AgentController::AgentController(kube::Client& client, checkpoint::OciRuntime& runtime,
                                 AgentOptions options)
    : client_(client),
      runtime_(runtime),
      options_(std::move(options)),
      records_(options_.records_dir),
      as_source_(client, kMigrations,
                 {.label_selector = std::string(api::kSourceNodeLabel) + "=" + options_.node}),
      as_target_(client, kMigrations,
                 {.label_selector = std::string(api::kTargetNodeLabel) + "=" + options_.node}),
      pods_(client, kube::resources::kPods, {.field_selector = "spec.nodeName=" + options_.node}),
      queue_(RealClock::instance(), {}, options_.queue_metrics),
      events_(client, {.reporting_controller = "ferry.dev/agent",
                       .reporting_instance = "ferry-agent-" + options_.node}) {
  kube::EventHandlers on_migration{
      .on_add = [this](const kube::ObjectPtr& o) { queue_.add(mkey(kube::object_key(*o))); },
      .on_update = [this](const kube::ObjectPtr&,
                          const kube::ObjectPtr& o) { queue_.add(mkey(kube::object_key(*o))); },
      .on_delete = [this](const kube::ObjectPtr& o) { queue_.add(mkey(kube::object_key(*o))); }};
  as_source_.add_handlers(on_migration);
  as_target_.add_handlers(on_migration);
  // A pod change concerns its gate, the Migration restoring into it, and
  // any Migration moving it away.
  auto on_pod = [this](const kube::ObjectPtr& o) {
    const std::string ns = str(*o, "/metadata/namespace");
    queue_.add(pkey(kube::object_key(*o)));
    if (auto name = str(*o, "/metadata/annotations/ferry.dev~1migration"); !name.empty()) {
      queue_.add(mkey(ns + "/" + name));
    }
    const std::string pod = str(*o, "/metadata/name");
    for (const auto& m : as_source_.store().list()) {
      if (str(*m, "/spec/podName") == pod && str(*m, "/metadata/namespace") == ns) {
        queue_.add(mkey(kube::object_key(*m)));
      }
    }
  };
  pods_.add_handlers(
      {.on_add = on_pod,
       .on_update = [on_pod](const kube::ObjectPtr&, const kube::ObjectPtr& o) { on_pod(o); },
       .on_delete = on_pod});
}

void AgentController::run(std::stop_token stop, int workers) {
  std::jthread a([this](std::stop_token s) { as_source_.run(s); });
  std::jthread b([this](std::stop_token s) { as_target_.run(s); });
  std::jthread c([this](std::stop_token s) { pods_.run(s); });
  for (auto* inf : {&as_source_, &as_target_, &pods_}) {
    while (!inf->wait_for_sync(stop, std::chrono::seconds(1))) {
      if (stop.stop_requested()) {
        queue_.shut_down();
        return;
      }
    }
  }
  synced_ = true;
  // What a previous run of this agent left: each record's Migration gets a
  // reconcile, which finishes or rolls back.
  if (auto records = records_.load_all(); records.ok()) {
    for (const auto& r : *records) queue_.add(mkey(r.ns + "/" + r.migration));
  }
  for (const auto& key : as_source_.store().keys()) queue_.add(mkey(key));
  for (const auto& key : as_target_.store().keys()) queue_.add(mkey(key));
  for (const auto& key : pods_.store().keys()) queue_.add(pkey(key));
  std::vector<std::jthread> pool;
  pool.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    pool.emplace_back([this] {
      while (auto key = queue_.get()) {
        const std::string what = key->substr(2);
        Status s = key->rfind("m/", 0) == 0 ? reconcile_migration(what) : reconcile_pod(what);
        if (s.ok()) {
          queue_.forget(*key);
        } else {
          // A conflict only means the retry must read the newer version.
          if (s.code() != Code::kConflict) {
            std::fprintf(stderr, "ferry-agent: %s: %s\n", key->c_str(), s.to_string().c_str());
          }
          queue_.add_rate_limited(*key);
        }
        queue_.done(*key);
      }
    });
  }
  std::stop_callback on_stop(stop, [this] { queue_.shut_down(); });
  pool.clear();
}

kube::ObjectPtr AgentController::migration(const std::string& key) const {
  if (auto m = as_source_.store().get(key)) return m;
  return as_target_.store().get(key);
}

Status AgentController::reconcile_migration(const std::string& key) {
  const auto slash = key.find('/');
  const std::string ns = key.substr(0, slash), name = key.substr(slash + 1);
  std::optional<Record> record = records_.find(ns, name);
  kube::ObjectPtr obj = migration(key);
  if (!obj) {
    // Gone without us (force-removed finalizer, or the label was changed):
    // whatever we still hold must not stay frozen. Thaw unless the pod is
    // being deleted (then it must die frozen).
    if (!record) return {};
    kube::ObjectPtr pod = pods_.store().get(record->ns + "/" + record->pod);
    bool thaw = record->state != Record::State::kKilled && pod && !deleting(*pod);
    return release(*record, thaw);
  }
  auto m = api::migration_from_json(*obj);
  if (!m.ok()) return {};
  if (m->status.source_node == options_.node) FERRY_RETURN_IF_ERROR(source_side(*m, record));
  if (m->status.target_node == options_.node) FERRY_RETURN_IF_ERROR(target_side(*m));
  return {};
}

Status AgentController::source_side(const api::Migration& m, std::optional<Record> record) {
  const Phase phase = m.status.phase.value_or(Phase::kPending);
  const bool ours = std::find(m.finalizers.begin(), m.finalizers.end(), api::kSnapshotFinalizer) !=
                    m.finalizers.end();
  const std::string abandoned = runtime::abandoned_marker(options_.snapshot_root, m.uid);
  if (rolling_back(m)) {
    // The replacement's ferry-runc may be waiting for this snapshot: tell
    // it to stop, so kubelet can delete the replacement and the operator
    // can let us thaw the source.
    (void)posix::write_file_atomic(abandoned, m.name + "\n", 0600);
  } else if (api::is_final(phase)) {
    std::error_code ec;
    std::filesystem::remove(abandoned, ec);
  }
  if (!record) {
    if (phase == Phase::kCheckpointing && !m.deleting && m.status.failure_reason.empty()) {
      return checkpoint(m);
    }
    if (api::is_final(phase) && ours) {  // cleanup done, or the record was lost
      (void)store::SnapshotStore(options_.snapshot_root).remove(m.uid);
      return remove_finalizer(m.ns, m.name);
    }
    return {};
  }
  if (record->state == Record::State::kCheckpointing) {
    // A previous run of this agent died mid-dump. Its CRIU ran outside the
    // agent's pod (checkpoint_cgroups.h) and may still be dumping, with its
    // parasite inside the source's tasks: a thaw or a kill now would race
    // it, whatever the phase. Wait for it to end.
    for (const auto& c : record->containers) {
      auto running = runtime_.earlier_checkpoint_running(c.id);
      if (!running.ok()) return running.status().with_context("container " + c.name);
      if (*running) {
        return Status(Code::kUnavailable,
                      "the checkpoint of container " + c.name +
                          " that the previous agent started is still running; waiting for it "
                          "to end",
                      "CheckpointStillRunning");
      }
    }
  }
  if (record->migration_uid != m.uid) {
    // A newer Migration of the same name: the old one's holdings are orphaned.
    kube::ObjectPtr pod = pods_.store().get(record->ns + "/" + record->pod);
    return release(*record, record->state != Record::State::kKilled && pod && !deleting(*pod));
  }
  switch (phase) {
    case Phase::kRolledBack:
    case Phase::kFailed:
      if (record->state == Record::State::kKilled) {
        // Failed after the source was gone (an owned pod's restore): the
        // snapshot is the only copy of its state. Kept for recovery;
        // retention removes it in time.
        FERRY_RETURN_IF_ERROR(records_.erase(record->migration_uid));
        return ours ? remove_finalizer(m.ns, m.name) : Status();
      }
      FERRY_RETURN_IF_ERROR(release(*record, /*thaw=*/true));
      return ours ? remove_finalizer(m.ns, m.name) : Status();
    case Phase::kSucceeded:
      FERRY_RETURN_IF_ERROR(release(*record, /*thaw=*/false));
      return ours ? remove_finalizer(m.ns, m.name) : Status();
    case Phase::kRestoring:
    case Phase::kSwitching: {
      // The operator deletes the source pod (owned: in Restoring, so its
      // owner creates the replacement; bare: in Switching). It dies
      // frozen, never thawed, whoever deleted it.
      if (record->post_copy && phase == Phase::kRestoring &&
          record->state == Record::State::kFrozen) {
        FERRY_RETURN_IF_ERROR(follow_transfer(m, *record));
      }
      kube::ObjectPtr pod = pods_.store().get(record->ns + "/" + record->pod);
      bool going = !pod || deleting(*pod) || str(*pod, "/metadata/uid") != record->pod_uid;
      if (!going || record->state == Record::State::kKilled) return {};
      drop_transfer(record->migration_uid);
      checkpoint::CheckpointEngine engine(runtime_);
      for (const auto& c : record->containers) {
        Status st = engine.kill_frozen(c.id);
        if (!st.ok() && st.code() != Code::kNotFound) return st.with_context("kill " + c.name);
      }
      record->state = Record::State::kKilled;
      return records_.save(*record);
    }
    case Phase::kCheckpointing:
      if (record->state == Record::State::kPreparing) {
        // The last attempt stopped before freezing anything (taking the
        // pod out of its Services failed: the API was unavailable, say):
        // nothing to roll back, so carry on.
        return checkpoint(m);
      }
      if (record->state == Record::State::kCheckpointing) {
        // A previous run of this agent died mid-dump (and its dump has
        // ended, above): the snapshot may be half-written. Report it; the
        // operator rolls back, we thaw.
        return report_failure(m,
                              Status(Code::kFailedPrecondition,
                                     "the source agent restarted while checkpointing; rolling "
                                     "back",
                                     "AgentRestarted"),
                              "");
      }
      // Frozen, but the status write that follows did not land (the API
      // was unavailable): write it now, with what the checkpoint measured.
      if (!record->failure.empty()) {
        return report_failure(m, Status(Code::kInternal, record->failure, "CheckpointFailed"), "");
      }
      if (record->post_copy && !serving_pages(m.uid)) {
        return report_failure(m, transfer_lost(options_.node), "");
      }
      return update_status(m.ns, m.name, [&](api::MigrationStatus& s) {
        return enter_restoring(s, record->figures);
      });
    default:
      return {};
  }
}

Status AgentController::checkpoint(const api::Migration& m) {
  kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + m.spec.pod_name);
  if (!pod || deleting(*pod)) {
    return report_failure(
        m, Status(Code::kNotFound, "source pod " + m.spec.pod_name + " is gone", "SourcePodGone"),
        "");
  }
  const bool owned = !m.status.owner_uid.empty();
  if (!owned && (m.status.target_pod.empty() || m.status.target_pod_uid.empty())) {
    return {};  // not yet
  }
  if (post_copy(m) && options_.page_server_address.empty()) {
    return report_failure(
        m,
        Status(Code::kFailedPrecondition,
               "PostCopy needs the source agent to serve pages, and ferry-agent on " +
                   options_.node + " runs without --page-server-address; use Cold",
               "ModeUnsupportedOnNode"),
        "");
  }
  if (post_copy(m)) {
    Status supported =
        checkpoint::check_mode_supported(checkpoint::Mode::kPostCopy, options_.criu_features);
    if (!supported.ok()) return report_failure(m, supported.with_context(options_.node), "");
  }
  Record record{.migration_uid = m.uid,
                .ns = m.ns,
                .migration = m.name,
                .pod = m.spec.pod_name,
                .pod_uid = str(*pod, "/metadata/uid")};
  for (const auto& s : pod->value(json::json_pointer("/status/containerStatuses"), json::array())) {
    record.containers.push_back(
        {s.value("name", ""), strip_runtime_prefix(s.value("containerID", ""))});
  }
  if (record.containers.empty() ||
      std::any_of(record.containers.begin(), record.containers.end(),
                  [](const FrozenContainer& c) { return c.id.empty(); })) {
    return report_failure(
        m,
        Status(Code::kFailedPrecondition,
               "source pod " + m.spec.pod_name + " has no running container", "PodNotRunning"),
        "");
  }
  // Hold the Migration so deleting it cannot strand a frozen container or
  // a snapshot. Refused once it is being deleted: then we do nothing.
  if (std::find(m.finalizers.begin(), m.finalizers.end(), api::kSnapshotFinalizer) ==
      m.finalizers.end()) {
    json finalizers = json(m.finalizers);
    finalizers.push_back(api::kSnapshotFinalizer);
    auto held = client_.patch(
        kMigrations, m.ns, m.name, kube::PatchType::kMerge,
        {{"metadata", {{"resourceVersion", m.resource_version}, {"finalizers", finalizers}}}});
    if (!held.ok()) {
      return held.status().code() == Code::kConflict ? Status()  // a newer version comes
                                                     : held.status().with_context("add finalizer");
    }
  }
  // Recorded before the pod leaves its Services, so that a crash from here
  // on puts it back (a rollback thaws and serves again); Preparing while
  // nothing is frozen, so that a failed API call here is retried rather
  // than taken for a dump cut short.
  record.state = Record::State::kPreparing;
  FERRY_RETURN_IF_ERROR(records_.save(record));
  if (has_serving_gate(*pod)) {
    // Out of the Services first: no new connection reaches a frozen process.
    FERRY_RETURN_IF_ERROR(
        set_serving(*pod, false, "Migrating",
                    "frozen for Migration " + m.name + " to " + m.status.target_node));
  }
  record.state = Record::State::kCheckpointing;
  FERRY_RETURN_IF_ERROR(records_.save(record));

  CheckpointSample sample;
  std::string excerpt;
  Status failed;
  // PostCopy: the page servers, kept (even when a later container fails)
  // so that the rollback's release() stops them.
  std::shared_ptr<PageTransfer> transfer;
  if (post_copy(m)) {
    transfer = std::make_shared<PageTransfer>();
    std::lock_guard lock(transfers_mu_);
    transfers_[m.uid] = transfer;
  }
  for (size_t i = 0; i < record.containers.size() && failed.ok(); ++i) {
    const auto& c = record.containers[i];
    const std::string work_dir = options_.work_dir + "/" + c.id;
    const checkpoint::SourceSnapshotRequest request{
        .container_id = c.id,
        .snapshot_root = options_.snapshot_root,
        .binding = binding_for(m, c.name),
        .tcp = checkpoint::TcpMode::kClose,  // the target pod has a new IP
        .network_lock = options_.criu_network_lock,
        .work_dir = work_dir,
        .criu_version = options_.criu_version,
        .runtime_version = options_.runtime_version,
        .digest_algorithm = options_.snapshot_digest,
        .log_file = runtime::current_container_log(options_.pod_log_root, m.ns, m.spec.pod_name,
                                                   record.pod_uid, c.name)};
    double freeze = 0, dump = 0, publish = 0;
    uint64_t bytes = 0;
    if (transfer) {
      auto port = free_tcp_port(options_.page_server_address);
      if (!port.ok()) {
        failed = port.status().with_context("container " + c.name);
        break;
      }
      auto r = checkpoint::snapshot_container_lazy(
          runtime_, request, options_.page_server_address + ":" + std::to_string(*port),
          options_.criu_features.lazy_dump_read);
      if (!r.ok()) {
        failed = r.status().with_context("container " + c.name);
        excerpt = checkpoint::criu_log_excerpt(work_dir + "/dump.log", 20);
        break;
      }
      freeze = r->dump.freeze.count();
      dump = r->dump.dump.count();
      publish = r->dump.publish.count();
      bytes = r->bytes;
      transfer->servers.push_back(std::move(r->dump.transfer));
      transfer->containers.push_back(c.name);
      transfer->work_dirs.push_back(work_dir);
    } else {
      auto r = checkpoint::snapshot_container(runtime_, request);
      if (!r.ok()) {
        failed = r.status().with_context("container " + c.name);
        excerpt = checkpoint::criu_log_excerpt(work_dir + "/dump.log", 20);
        break;
      }
      freeze = r->dump.freeze.count();
      dump = r->dump.dump.count();
      publish = r->publish.count();
      bytes = r->bytes;
    }
    if (i == 0) sample.freeze_seconds = freeze;
    sample.dump_seconds += dump;
    sample.publish_seconds += publish;
    sample.bytes += bytes;
  }
  if (transfer && failed.ok()) watch_transfer(transfer, mkey(m.ns + "/" + m.name));
  // Frozen either way (or partly): only a rollback or a kill releases it.
  record.state = Record::State::kFrozen;
  record.post_copy = transfer != nullptr;
  record.failure = failed.ok() ? "" : failed.message();
  record.figures = {.freeze_seconds = sample.freeze_seconds,
                    .dump_seconds = sample.dump_seconds,
                    .publish_seconds = sample.publish_seconds,
                    .bytes = sample.bytes};
  FERRY_RETURN_IF_ERROR(records_.save(record));
  sample.ok = failed.ok();
  if (options_.on_checkpoint) options_.on_checkpoint(sample);
  if (!failed.ok()) return report_failure(m, failed, excerpt);

  return update_status(m.ns, m.name,
                       [&](api::MigrationStatus& s) { return enter_restoring(s, record.figures); });
}

Status AgentController::release(const Record& record, bool thaw) {
  // PostCopy: the page servers stop first (CRIU lets go of the tasks,
  // which stay frozen in their cgroup), then the thaw or the kill.
  drop_transfer(record.migration_uid);
  checkpoint::CheckpointEngine engine(runtime_);
  for (const auto& c : record.containers) {
    // A container killed already in the switch is a success of kill_frozen.
    Status st = thaw ? engine.thaw(c.id) : engine.kill_frozen(c.id);
    if (!st.ok() && st.code() != Code::kNotFound) {
      return st.with_context((thaw ? "thaw " : "kill ") + c.name);
    }
  }
  if (thaw) {
    kube::ObjectPtr pod = pods_.store().get(record.ns + "/" + record.pod);
    if (pod && has_serving_gate(*pod) && str(*pod, "/metadata/uid") == record.pod_uid) {
      FERRY_RETURN_IF_ERROR(
          set_serving(*pod, true, "RolledBack", "Migration " + record.migration + " rolled back"));
    }
  }
  Status removed = store::SnapshotStore(options_.snapshot_root).remove(record.migration_uid);
  if (!removed.ok()) return removed;  // in use by a restore: retry later
  return records_.erase(record.migration_uid);
}

void AgentController::watch_transfer(const std::shared_ptr<PageTransfer>& transfer,
                                     const std::string& key) {
  PageTransfer* t = transfer.get();  // the map owns it; drop_transfer joins us first
  t->published = std::chrono::steady_clock::now();
  t->watcher = std::jthread([this, t, key](std::stop_token stop) {
    Status outcome;
    size_t failed = 0;
    for (size_t i = 0; i < t->servers.size() && outcome.ok(); ++i) {
      Status s;
      do {
        if (stop.stop_requested()) return;  // dropped: nobody asks any more
        s = t->servers[i]->wait(std::chrono::milliseconds(200));
      } while (s.code() == Code::kDeadlineExceeded);
      if (!s.ok()) {
        outcome = s.with_context("page server of container " + t->containers[i]);
        failed = i;
      }
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t->published;
    // What the page servers carried, which the published bytes leave out:
    // CRIU counts the pages it left to them (pages_lazy) in the statistics
    // it writes once a dump ended well.
    uint64_t served = 0;
    for (size_t i = 0; i < t->work_dirs.size() && outcome.ok(); ++i) {
      auto stats =
          checkpoint::read_criu_dump_stats(t->work_dirs[i] + "/" + checkpoint::kCriuDumpStatsFile);
      if (stats.ok()) {
        served += stats->pages_lazy * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
      } else {
        std::fprintf(stderr, "ferry-agent: container %s: %s (its served pages go uncounted)\n",
                     t->containers[i].c_str(), stats.status().to_string().c_str());
      }
    }
    {
      std::lock_guard lock(transfers_mu_);
      t->outcome = outcome;
      t->failed = failed;
      t->took = took;
      t->served_bytes = served;
    }
    if (options_.on_page_transfer) options_.on_page_transfer(outcome.ok(), took.count());
    queue_.add(key);
  });
}

bool AgentController::serving_pages(const std::string& migration_uid) {
  std::lock_guard lock(transfers_mu_);
  return transfers_.contains(migration_uid);
}

void AgentController::drop_transfer(const std::string& migration_uid) {
  std::shared_ptr<PageTransfer> gone;
  {
    std::lock_guard lock(transfers_mu_);
    auto it = transfers_.find(migration_uid);
    if (it == transfers_.end()) return;
    gone = std::move(it->second);
    transfers_.erase(it);
  }
  // Outside the lock: the watcher may be taking it. Its jthread is joined
  // first, then each server's handle stops runc and CRIU.
  const std::vector<std::string> work_dirs = gone->work_dirs;
  gone.reset();
  // The page servers' TLS keys are of no use any more; CRIU's logs stay.
  for (const auto& dir : work_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(dir + "/tls", ec);
  }
}

Status AgentController::follow_transfer(const api::Migration& m, const Record& record) {
  if (api::condition_true(m.status.conditions, api::kPagesTransferredCondition)) return {};
  std::optional<Status> outcome;
  std::string excerpt;
  double took = 0;
  uint64_t served = 0;
  {
    std::lock_guard lock(transfers_mu_);
    auto it = transfers_.find(m.uid);
    if (it == transfers_.end()) {
      outcome = transfer_lost(options_.node);
    } else if (it->second->outcome) {
      outcome = it->second->outcome;
      took = it->second->took.count();
      served = it->second->served_bytes;
      if (!outcome->ok()) {
        excerpt = checkpoint::criu_log_excerpt(
            it->second->work_dirs[it->second->failed] + "/dump.log", 20);
      }
    }
  }
  if (!outcome) return {};  // still serving; the watcher requeues us when it ends
  if (!outcome->ok()) {
    if (outcome->reason() == "PageTransferLost") return report_failure(m, *outcome, "");
    return report_failure(
        m,
        Status(Code::kInternal, "PostCopy page transfer failed: " + outcome->message(),
               "PageTransferFailed"),
        excerpt);
  }
  const double transfer_seconds = record.figures.publish_seconds + took;
  return update_status(m.ns, m.name, [&](api::MigrationStatus& s) {
    if (s.phase != Phase::kRestoring ||
        api::condition_true(s.conditions, api::kPagesTransferredCondition)) {
      return false;
    }
    s.transfer = api::format_seconds(transfer_seconds);
    // The snapshot published at the checkpoint, and the memory served since.
    s.bytes_checkpointed = static_cast<int64_t>(record.figures.bytes + served);
    s.bytes_transferred = static_cast<int64_t>(record.figures.bytes + served);
    api::set_condition(s.conditions,
                       {api::kPagesTransferredCondition, "True", "AllPagesServed",
                        "the restored copy has every page of the source's memory (" +
                            std::to_string(served >> 20) + " MiB served by " + options_.node +
                            " in " + api::format_seconds(took) + ")",
                        m.generation, ""},
                       api::rfc3339_now());
    return true;
  });
}

Status AgentController::target_side(const api::Migration& m) {
  const Phase phase = m.status.phase.value_or(Phase::kPending);
  if (phase != Phase::kRestoring && phase != Phase::kSwitching && phase != Phase::kSucceeded) {
    return {};
  }
  kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + m.status.target_pod);
  if (!pod || str(*pod, "/metadata/uid") != m.status.target_pod_uid || deleting(*pod)) return {};
  if (phase != Phase::kRestoring) {
    // Switched: the restored pod serves (idempotent, e.g. after a restart).
    if (has_serving_gate(*pod) && serving_condition(*pod) != true) {
      return set_serving(*pod, true, "Restored", "restored by Migration " + m.name);
    }
    return {};
  }
  if (!m.status.owner_uid.empty()) {
    // Published before its owner created this pod: the snapshot may now be
    // restored into it, and into no other pod.
    Status granted =
        store::SnapshotStore(options_.snapshot_root)
            .grant(m.uid, {.pod_name = m.status.target_pod, .pod_uid = m.status.target_pod_uid});
    if (!granted.ok()) {
      return report_failure(m, granted, "");
    }
  }
  if (!all_containers_running(*pod)) {
    if (!str(*pod, "/metadata/annotations/ferry.dev~1snapshot-ready").empty()) {
      if (std::string why = restore_failure(*pod); !why.empty()) {
        return report_failure(
            m,
            Status(Code::kInternal, "restore failed on " + options_.node + ": " + why,
                   "RestoreFailed"),
            "");
      }
    }
    return {};
  }
  if (has_serving_gate(*pod)) {
    FERRY_RETURN_IF_ERROR(set_serving(*pod, true, "Restored", "restored by Migration " + m.name));
  }
  // The restore took until the restored copy ran (for PostCopy, before
  // its memory had arrived: the transfer is the source's figure).
  auto record_restore = [](api::MigrationStatus& s) {
    if (!s.restore.empty()) return false;
    auto since = api::entered(s, Phase::kRestoring);
    if (!since) return false;
    s.restore = api::format_seconds(api::unix_now() - *since);
    return true;
  };
  if (post_copy(m) && !api::condition_true(m.status.conditions, api::kPagesTransferredCondition)) {
    // It runs and serves, but part of its memory is still in the frozen
    // source: no switch (which deletes the source) before every page is
    // here. The source agent's report of the transfer requeues us.
    return update_status(m.ns, m.name, [&](api::MigrationStatus& s) {
      return s.phase == Phase::kRestoring && record_restore(s);
    });
  }
  return update_status(m.ns, m.name, [&](api::MigrationStatus& s) {
    if (s.phase != Phase::kRestoring) return false;
    record_restore(s);
    api::enter_phase(s, Phase::kSwitching);
    return true;
  });
}

Status AgentController::reconcile_pod(const std::string& key) {
  kube::ObjectPtr pod = pods_.store().get(key);
  if (!pod || deleting(*pod) || !has_serving_gate(*pod)) return {};
  if (serving_condition(*pod) == true) return {};
  if (!str(*pod, "/metadata/annotations/ferry.dev~1restore-from").empty()) {
    // A replacement pod can only be Ready once its containers run, which
    // for them means restored: open its gate at once, so kubelet marks it
    // Ready in the same status update that reports the restored container
    // (one kubelet round trip sooner than opening it after the restore).
    if (serving_condition(*pod).has_value()) return {};
    return set_serving(*pod, true, "Restoring", "ready as soon as its restore succeeds");
  }
  // A pod frozen for a Migration stays out until it is thawed.
  if (auto all = records_.load_all(); all.ok()) {
    for (const auto& r : *all) {
      if (r.pod_uid == str(*pod, "/metadata/uid")) return {};
    }
  }
  if (str(*pod, "/status/phase") != "Running") return {};
  return set_serving(*pod, true, "Serving", "not migrating");
}

Status AgentController::set_serving(const json& pod, bool serving, const std::string& reason,
                                    const std::string& message) {
  // Strategic merge keys pod conditions by type: only ours changes.
  json patch = {{"status",
                 {{"conditions",
                   {{{"type", api::kServingCondition},
                     {"status", serving ? "True" : "False"},
                     {"reason", reason},
                     {"message", message},
                     {"lastTransitionTime", api::rfc3339_now().substr(0, 19) + "Z"}}}}}}};
  auto r = client_.patch(kube::resources::kPods, str(pod, "/metadata/namespace"),
                         str(pod, "/metadata/name"), kube::PatchType::kStrategicMerge, patch,
                         {.subresource = "status"});
  if (!r.ok() && r.status().code() != Code::kNotFound) {
    return r.status().with_context("set " + std::string(api::kServingCondition) + " on pod " +
                                   str(pod, "/metadata/name"));
  }
  return {};
}

Status AgentController::report_failure(const api::Migration& m, const Status& why,
                                       const std::string& excerpt) {
  json regarding = {{"apiVersion", "ferry.dev/v1alpha1"},
                    {"kind", "Migration"},
                    {"metadata", {{"name", m.name}, {"namespace", m.ns}, {"uid", m.uid}}}};
  bool reported = false;
  Status st = update_status(m.ns, m.name, [&](api::MigrationStatus& s) {
    if (!s.failure_reason.empty() || (s.phase && api::is_final(*s.phase))) return false;
    s.failure_reason = why.reason().empty() ? "AgentFailure" : why.reason();
    s.failure_message = why.message();
    s.criu_log_excerpt = excerpt;
    reported = true;
    return true;
  });
  if (st.ok() && reported) {
    (void)events_.record(regarding, "Warning", why.reason(), "Checkpoint", why.message());
  }
  return st;
}

Status AgentController::update_status(const std::string& ns, const std::string& name,
                                      const std::function<bool(api::MigrationStatus&)>& mutate) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto fresh = client_.get(kMigrations, ns, name);
    if (!fresh.ok()) return fresh.status().with_context("get Migration " + name);
    auto m = api::migration_from_json(*fresh);
    if (!m.ok()) return m.status();
    api::MigrationStatus s = m->status;
    if (!mutate(s)) return {};
    json body = api::status_to_json(s);
    body["metadata"] = {{"resourceVersion", m->resource_version}};
    auto r = client_.patch(kMigrations, ns, name, kube::PatchType::kMerge, body,
                           {.subresource = "status"});
    if (r.ok()) return {};
    if (r.status().code() != Code::kConflict) return r.status().with_context("status of " + name);
  }
  return Status(Code::kConflict, "status of Migration " + name + " kept changing", "Conflict");
}

Status AgentController::remove_finalizer(const std::string& ns, const std::string& name) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto fresh = client_.get(kMigrations, ns, name);
    if (!fresh.ok()) return fresh.status().code() == Code::kNotFound ? Status() : fresh.status();
    json finalizers = json::array();
    bool had = false;
    for (const auto& f : fresh->value(json::json_pointer("/metadata/finalizers"), json::array())) {
      if (f == api::kSnapshotFinalizer) {
        had = true;
      } else {
        finalizers.push_back(f);
      }
    }
    if (!had) return {};
    auto r = client_.patch(kMigrations, ns, name, kube::PatchType::kMerge,
                           {{"metadata",
                             {{"resourceVersion", str(*fresh, "/metadata/resourceVersion")},
                              {"finalizers", finalizers}}}});
    if (r.ok() || r.status().code() == Code::kNotFound) return {};
    if (r.status().code() != Code::kConflict) return r.status();
  }
  return Status(Code::kConflict, "finalizers of Migration " + name + " kept changing", "Conflict");
}

}  // namespace ferry::agent
