#include "migration/controller.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "api/annotations.h"
#include "migration/placement.h"
#include "migration/policy.h"

namespace ferry::operator_ {
namespace {

using api::Phase;
using kube::json;

// Views of cached objects; `objects` keeps them alive meanwhile.
std::vector<const json*> views(const std::vector<kube::ObjectPtr>& objects) {
  std::vector<const json*> out;
  out.reserve(objects.size());
  for (const auto& o : objects) out.push_back(o.get());
  return out;
}

std::string str(const json& j, const char* pointer) {
  return j.value(json::json_pointer(pointer), std::string());
}

constexpr const char* kPodIndex = "pod";

bool deleting(const json& object) {
  return object.contains("metadata") && object["metadata"].contains("deletionTimestamp") &&
         !object["metadata"]["deletionTimestamp"].is_null();
}

// The API server's copy of an object, null when it does not exist: for the
// decisions that must not rest on a watch cache that may lag behind it.
Result<kube::ObjectPtr> get_live(kube::Client& client, const kube::ResourceType& type,
                                 const std::string& ns, const std::string& name) {
  auto fresh = client.get(type, ns, name);
  if (fresh.ok()) return std::make_shared<const json>(std::move(fresh).value());
  if (fresh.status().code() == Code::kNotFound) return kube::ObjectPtr();
  return fresh.status().with_context("get " + type.plural + " " + name);
}

bool node_ready(const json* node) {
  if (node == nullptr) return false;
  for (const auto& c : node->value(json::json_pointer("/status/conditions"), json::array())) {
    if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
  }
  return false;
}

// Before Switching the source is intact (running or frozen) and the
// Migration can still be undone.
// The timeouts in force: resolved at admission into status.effective;
// before that, the spec's or the defaults.
int64_t completion_seconds(const api::Migration& m, const DefaultTimeouts& d) {
  if (m.status.effective) return m.status.effective->completion_seconds;
  return m.spec.completion_seconds.value_or(d.completion_seconds);
}
int64_t progress_seconds(const api::Migration& m, const DefaultTimeouts& d) {
  if (m.status.effective) return m.status.effective->progress_seconds;
  return m.spec.progress_seconds.value_or(d.progress_seconds);
}

bool owned(const api::MigrationStatus& s) {
  return !s.owner_uid.empty();
}

// An owned source is deleted by the operator once its snapshot is
// published (its owner then creates the replacement). From then on there
// is nothing to roll back to: the snapshot is the only copy of its state.
bool source_deleted(const api::MigrationStatus& s) {
  return api::condition_true(s.conditions, api::kSourceDeletedCondition);
}

constexpr const char* kRestoreFromIndex = "restore-from";

bool before_switch(Phase p) {
  return p == Phase::kPending || p == Phase::kScheduling || p == Phase::kCheckpointing ||
         p == Phase::kTransferring || p == Phase::kRestoring;
}

}  // namespace

std::string replacement_pod_name(const std::string& source_name, const std::string& migration_uid) {
  std::string suffix = "-" + migration_uid.substr(0, std::min<size_t>(5, migration_uid.size()));
  // A pod name must stay a DNS subdomain, and its hostname a label: <= 63.
  std::string base =
      source_name.substr(0, std::min<size_t>(source_name.size(), 63 - suffix.size()));
  while (!base.empty() && (base.back() == '-' || base.back() == '.')) base.pop_back();
  return base + suffix;
}

json replacement_pod(const api::Migration& m, const json& source, const std::string& target_node) {
  json meta = {{"name", replacement_pod_name(m.spec.pod_name, m.uid)}, {"namespace", m.ns}};
  const json& src_meta = source.at("metadata");
  if (src_meta.contains("labels")) meta["labels"] = src_meta["labels"];
  json annotations = src_meta.value("annotations", json::object());
  annotations.erase("kubectl.kubernetes.io/last-applied-configuration");
  annotations[api::kRestoreFromAnnotation] = m.uid;
  annotations[api::kMigrationAnnotation] = m.name;
  meta["annotations"] = annotations;

  json spec = source.at("spec");
  spec["nodeName"] = target_node;
  spec["runtimeClassName"] = "ferry";
  spec.erase("ephemeralContainers");
  json gates = spec.value("readinessGates", json::array());
  bool gated = std::any_of(gates.begin(), gates.end(), [](const json& g) {
    return g.value("conditionType", "") == api::kServingCondition;
  });
  if (!gated) gates.push_back({{"conditionType", api::kServingCondition}});
  spec["readinessGates"] = gates;
  return {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", meta}, {"spec", spec}};
}

MigrationController::MigrationController(kube::Client& client, ControllerOptions options)
    : client_(client),
      options_(std::move(options)),
      migrations_(client, kMigrations),
      pods_(client, kube::resources::kPods),
      nodes_(client, kube::resources::kNodes),
      queue_(RealClock::instance(), {}, options_.queue_metrics),
      events_(client, {.reporting_controller = "ferry.dev/operator",
                       .reporting_instance = options_.instance}) {
  migrations_.add_handlers(
      {.on_add = [this](const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); },
       .on_update = [this](const kube::ObjectPtr&,
                           const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); },
       .on_delete = [this](const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); }});
  // Migrations by the pods they concern ("ns/name" of the source and of the
  // replacement), so a pod event requeues only its own Migrations.
  migrations_.store().add_indexer(kPodIndex, [](const json& m) {
    const std::string ns = str(m, "/metadata/namespace");
    std::vector<std::string> pods = {ns + "/" + str(m, "/spec/podName")};
    if (auto target = str(m, "/status/targetPod"); !target.empty()) {
      pods.push_back(ns + "/" + target);
    }
    return pods;
  });
  pods_.store().add_indexer(kRestoreFromIndex, [](const json& pod) {
    std::vector<std::string> uids;
    if (auto uid = str(pod, "/metadata/annotations/ferry.dev~1restore-from"); !uid.empty()) {
      uids.push_back(uid);
    }
    return uids;
  });
  auto requeue = [this](const std::vector<kube::ObjectPtr>& migrations, bool pending_only) {
    for (const auto& m : migrations) {
      std::string phase = str(*m, "/status/phase");
      bool pending = phase.empty() || phase == "Pending";
      bool final = phase == "Succeeded" || phase == "Failed" || phase == "RolledBack";
      if (pending || (!pending_only && !final)) queue_.add(kube::object_key(*m));
    }
  };
  // A pod change moves its own Migrations on (a replacement running or
  // gone, a source deleted); any pod change can free resources a waiting
  // (Pending) Migration needs. Waiting ones are few; the rest are found by
  // index, never by scanning every Migration on every pod event.
  auto on_pod = [this, requeue](const kube::ObjectPtr& pod) {
    requeue(migrations_.store().by_index(kPodIndex, kube::object_key(*pod)), false);
    // A replacement an owner created, which the webhook marked.
    if (auto name = str(*pod, "/metadata/annotations/ferry.dev~1migration"); !name.empty()) {
      queue_.add(str(*pod, "/metadata/namespace") + "/" + name);
    }
    requeue(migrations_.store().list(), true);
  };
  pods_.add_handlers(
      {.on_add = on_pod,
       .on_update = [on_pod](const kube::ObjectPtr&, const kube::ObjectPtr& o) { on_pod(o); },
       .on_delete = on_pod});
  // Node changes (readiness, cordons, agent reports) are rare and can
  // concern any Migration.
  auto on_node = [this, requeue](const kube::ObjectPtr&) {
    requeue(migrations_.store().list(), false);
  };
  nodes_.add_handlers(
      {.on_add = on_node,
       .on_update = [on_node](const kube::ObjectPtr&, const kube::ObjectPtr& o) { on_node(o); },
       .on_delete = on_node});
}

void MigrationController::run(std::stop_token stop, int workers) {
  std::jthread m([this](std::stop_token s) { migrations_.run(s); });
  std::jthread p([this](std::stop_token s) { pods_.run(s); });
  std::jthread n([this](std::stop_token s) { nodes_.run(s); });
  for (auto* inf : {&migrations_, &pods_, &nodes_}) {
    while (!inf->wait_for_sync(stop, std::chrono::seconds(1))) {
      if (stop.stop_requested()) {
        queue_.shut_down();
        return;
      }
    }
  }
  synced_ = true;
  for (const auto& key : migrations_.store().keys()) queue_.add(key);
  std::vector<std::jthread> pool;
  pool.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    pool.emplace_back([this] {
      while (auto key = queue_.get()) {
        auto started = std::chrono::steady_clock::now();
        Status s = reconcile(*key);
        if (options_.on_reconcile) {
          options_.on_reconcile(s.ok(), std::chrono::steady_clock::now() - started);
        }
        if (s.ok()) {
          queue_.forget(*key);
        } else {
          // A conflict is optimistic concurrency doing its job (the object
          // changed under us; the retry reads the new version): not an error.
          if (s.code() != Code::kConflict) {
            std::fprintf(stderr, "ferry-operator: reconcile %s: %s\n", key->c_str(),
                         s.to_string().c_str());
          }
          queue_.add_rate_limited(*key);  // transient (API errors): retry with backoff
        }
        queue_.done(*key);
      }
    });
  }
  std::stop_callback on_stop(stop, [this] { queue_.shut_down(); });
  pool.clear();  // joins the workers once the queue is shut down and drained
}

std::map<std::string, int> MigrationController::phase_counts() const {
  std::map<std::string, int> counts;
  for (const auto& m : migrations_.store().list()) {
    counts[str(*m, "/status/phase").empty() ? "Pending" : str(*m, "/status/phase")]++;
  }
  return counts;
}

Status MigrationController::write_status(const api::Migration& m,
                                         const api::MigrationStatus& status,
                                         const std::string& resource_version) {
  if (status == m.status) return {};  // write only what changed
  json body = api::status_to_json(status);
  body["metadata"] = {
      {"resourceVersion", resource_version.empty() ? m.resource_version : resource_version}};
  auto r = client_.patch(kMigrations, m.ns, m.name, kube::PatchType::kMerge, body,
                         {.subresource = "status"});
  return r.ok() ? Status() : r.status().with_context("update status of " + m.ns + "/" + m.name);
}

void MigrationController::event(const api::Migration& m, const std::string& type,
                                const std::string& reason, const std::string& action,
                                const std::string& note) {
  json regarding = {{"apiVersion", "ferry.dev/v1alpha1"},
                    {"kind", "Migration"},
                    {"metadata", {{"name", m.name}, {"namespace", m.ns}, {"uid", m.uid}}}};
  (void)events_.record(regarding, type, reason, action, note);
}

Status MigrationController::finish(const api::Migration& m, api::MigrationStatus s, Phase phase,
                                   const Status& why) {
  api::enter_phase(s, phase);
  if (auto began = api::entered(s, Phase::kPending)) {
    s.total = api::format_seconds(api::unix_now() - *began);
  }
  const std::string now = api::rfc3339_now();
  if (phase == Phase::kSucceeded) {
    api::set_condition(
        s.conditions,
        {"Succeeded", "True", "Migrated",
         "moved from " + s.source_node + " to " + s.target_node + " as pod " + s.target_pod,
         m.generation, ""},
        now);
  } else {
    s.failure_reason = why.reason();
    s.failure_message = why.message();
    api::set_condition(s.conditions,
                       {"Failed", "True", why.reason(), why.message(), m.generation, ""}, now);
  }
  FERRY_RETURN_IF_ERROR(write_status(m, s));
  if (phase == Phase::kSucceeded) {
    event(m, "Normal", "Migrated", "Switch",
          "pod " + m.spec.pod_name + " moved from " + s.source_node + " to " + s.target_node +
              " as " + s.target_pod + " in " + s.total);
  } else {
    event(m, "Warning", why.reason(), phase == Phase::kRolledBack ? "RollBack" : "Admit",
          why.message());
  }
  if (options_.on_final) options_.on_final(m, s);
  return {};
}

Status MigrationController::rollback_reason(const api::Migration& m) const {
  if (m.spec.cancel) {
    return {Code::kCancelled, "cancelled by the user before the switch", "Cancelled"};
  }
  if (m.deleting) {
    return {Code::kCancelled, "the Migration was deleted before the switch", "Deleted"};
  }
  if (!m.status.failure_reason.empty()) {
    return {Code::kFailedPrecondition, m.status.failure_message, m.status.failure_reason};
  }
  const double now = api::unix_now();
  const int64_t completion = completion_seconds(m, options_.default_timeouts);
  const int64_t progress = progress_seconds(m, options_.default_timeouts);
  if (auto began = api::entered(m.status, Phase::kPending);
      began && now - *began > static_cast<double>(completion)) {
    return {Code::kDeadlineExceeded,
            "the migration did not complete within " + std::to_string(completion) +
                "s (completionSeconds, status.effective)",
            "CompletionTimeout"};
  }
  if (m.status.phase && !m.status.phase_transitions.empty()) {
    auto last = api::parse_rfc3339(m.status.phase_transitions.back().time);
    if (last && now - *last > static_cast<double>(progress)) {
      return {Code::kDeadlineExceeded,
              "no progress in phase " + std::string(api::phase_name(*m.status.phase)) + " for " +
                  std::to_string(progress) + "s (progressSeconds, status.effective)",
              "ProgressTimeout"};
    }
  }
  return {};
}

Status MigrationController::reconcile(const std::string& key) {
  kube::ObjectPtr obj = migrations_.store().get(key);
  if (!obj) return {};  // gone: its agent's finalizer made sure nothing was left
  auto decoded = api::migration_from_json(*obj);
  if (!decoded.ok()) return {};  // the schema prevents this; never retry garbage
  const api::Migration& m = *decoded;
  if (m.status.phase && api::is_final(*m.status.phase)) {
    // A failed Migration leaves no replacement behind (safety net: the
    // rollback deleted it before going final).
    // An owned source's replacement is its owner's pod: never deleted here.
    if (*m.status.phase != Phase::kSucceeded && !m.status.target_pod.empty() && !owned(m.status)) {
      kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + m.status.target_pod);
      if (pod && str(*pod, "/metadata/uid") == m.status.target_pod_uid && !deleting(*pod)) {
        Status st = client_.remove(kube::resources::kPods, m.ns, m.status.target_pod,
                                   {.precondition_uid = m.status.target_pod_uid});
        if (!st.ok() && st.code() != Code::kNotFound) return st;
      }
    }
    // Settled: let go of the Migration (a deletion completes now).
    if (std::find(m.finalizers.begin(), m.finalizers.end(), api::kOperatorFinalizer) !=
        m.finalizers.end()) {
      json rest = json::array();
      for (const auto& f : m.finalizers) {
        if (f != api::kOperatorFinalizer) rest.push_back(f);
      }
      auto r = client_.patch(
          kMigrations, m.ns, m.name, kube::PatchType::kMerge,
          {{"metadata", {{"resourceVersion", m.resource_version}, {"finalizers", rest}}}});
      if (!r.ok() && r.status().code() != Code::kNotFound) {
        return r.status().with_context("remove finalizer of " + m.name);
      }
    }
    return {};
  }

  api::MigrationStatus s = m.status;
  s.observed_generation = m.generation;
  const Phase phase = s.phase.value_or(Phase::kPending);
  if (before_switch(phase)) {
    if (Status why = rollback_reason(m); !why.ok()) {
      if (!source_deleted(s)) return roll_back(m, s, why);
      // Past the point of no return: a cancel or deletion waits for the
      // restore; a failure ends it, keeping the snapshot for recovery.
      if (why.code() != Code::kCancelled) {
        return finish(m, s, Phase::kFailed,
                      Status(why.code(),
                             why.message() + " (the source pod was already deleted, so there "
                                             "is nothing to roll back to; the snapshot is kept)",
                             why.reason()));
      }
    }
    // Wake up for the timeouts even if nothing else happens.
    queue_.add_after(key, std::chrono::seconds(std::min(
                              progress_seconds(m, options_.default_timeouts), int64_t{30})));
  }
  switch (phase) {
    case Phase::kPending:
    case Phase::kScheduling:
      return admit(m, s);
    case Phase::kRestoring:
      return announce_snapshot(m, s);
    case Phase::kSwitching:
      return switch_over(m, s);
    default:
      return write_status(m, s);  // the agents' phases
  }
}

Status MigrationController::admit(const api::Migration& m, api::MigrationStatus s) {
  api::enter_phase(s, Phase::kPending);
  kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + m.spec.pod_name);
  if (Status ok = check_pod(pod.get(), m.ns, m.spec.pod_name); !ok.ok()) {
    // A refusal is final, so it is never made on the cache alone: a pod
    // created (or seen Running) a moment before its Migration may not be
    // in the cache yet, as when both come in one `kubectl apply`.
    auto live = get_live(client_, kube::resources::kPods, m.ns, m.spec.pod_name);
    if (!live.ok()) return live.status();
    pod = *live;
    if (ok = check_pod(pod.get(), m.ns, m.spec.pod_name); !ok.ok()) {
      return finish(m, s, Phase::kFailed, ok);
    }
  }
  auto nodes = nodes_.store().list();
  if (!m.spec.target_node.empty() && !nodes_.store().get(m.spec.target_node)) {
    // Likewise for a node that joined a moment ago.
    auto live = get_live(client_, kube::resources::kNodes, "", m.spec.target_node);
    if (!live.ok()) return live.status();
    if (*live) nodes.push_back(*live);
  }
  const auto pods = pods_.store().list();

  // Effective settings: the spec, else the first matching policy, else
  // defaults. Policies are read from the API server, not from a watch
  // cache: the settings are fixed here for the Migration's life, so a
  // policy applied just before it must count (a cache may not have it yet).
  auto policy_list = client_.list_all(kMigrationPolicies, "", {});
  if (!policy_list.ok()) return policy_list.status().with_context("list MigrationPolicies");
  const json policy_items = policy_list->value("items", json::array());
  std::vector<const json*> policies;
  for (const auto& item : policy_items) policies.push_back(&item);
  json ns_labels = json::object();
  if (needs_namespace_labels(policies)) {
    auto ns = client_.get(kube::resources::kNamespaces, "", m.ns);
    if (!ns.ok()) return ns.status().with_context("get namespace " + m.ns);
    ns_labels = ns->value(json::json_pointer("/metadata/labels"), json::object());
  }
  Resolution resolved =
      resolve_effective(m.spec, *pod, ns_labels, policies, options_.default_timeouts);
  s.effective = resolved.effective;
  auto place = [&](const std::string& mode) -> Result<Placement> {
    return choose_target(*pod, views(nodes), views(pods), m.spec.target_node, mode);
  };
  auto placement = place(s.effective->mode);
  if (!placement.ok() && placement.status().reason() == kModeUnsupported &&
      !resolved.fallback_mode.empty() && resolved.fallback_mode != s.effective->mode) {
    // The policy's fallbackMode, with the reason the mode could not be used.
    api::set_condition(s.conditions,
                       {"ModeFallback", "True", kModeUnsupported,
                        placement.status().message() + "; policy " + s.effective->policy +
                            " falls back to " + resolved.fallback_mode,
                        m.generation, ""},
                       api::rfc3339_now());
    s.effective->mode = resolved.fallback_mode;
    placement = place(s.effective->mode);
  }
  if (!placement.ok()) return finish(m, s, Phase::kFailed, placement.status());
  const std::string source_node = str(*pod, "/spec/nodeName");

  // One migration per pod; then the concurrency limits (the excess waits).
  // Admissions are serialized, and the ones this process made count until
  // the cache shows them: two workers admitting at once must not both
  // see the other as still Pending.
  std::lock_guard admitting(admit_mu_);
  std::vector<Admission> in_flight_now;
  for (const auto& other : migrations_.store().list()) {
    if (str(*other, "/metadata/uid") == m.uid) continue;
    std::string phase = str(*other, "/status/phase");
    if (phase.empty() || phase == "Pending" || phase == "Succeeded" || phase == "Failed" ||
        phase == "RolledBack") {
      continue;
    }
    in_flight_now.push_back({kube::object_key(*other), str(*other, "/metadata/name"),
                             str(*other, "/metadata/namespace"), str(*other, "/spec/podName"),
                             str(*other, "/status/sourceNode"), str(*other, "/status/targetNode")});
  }
  for (auto it = admitted_.begin(); it != admitted_.end();) {
    kube::ObjectPtr cached = migrations_.store().get(it->second.key);
    const std::string phase = cached ? str(*cached, "/status/phase") : "";
    const bool seen = !cached || str(*cached, "/metadata/uid") != it->first ||
                      !(phase.empty() || phase == "Pending");
    if (seen) {
      it = admitted_.erase(it);  // counted from the cache now (or gone)
    } else {
      if (it->first != m.uid) in_flight_now.push_back(it->second);
      ++it;
    }
  }
  int in_flight = 0, on_source = 0, on_target = 0;
  for (const auto& other : in_flight_now) {
    if (other.pod == m.spec.pod_name && other.ns == m.ns) {
      return finish(
          m, s, Phase::kFailed,
          Status(Code::kAlreadyExists,
                 "pod " + m.spec.pod_name + " is already being migrated by Migration " + other.name,
                 "AlreadyMigrating"));
    }
    ++in_flight;
    for (const std::string* node : {&other.source, &other.target}) {
      on_source += *node == source_node;
      on_target += *node == placement->target;
    }
  }
  std::string queued;
  if (in_flight >= options_.max_in_flight) {
    queued = std::to_string(in_flight) + " migrations in flight in the cluster (limit " +
             std::to_string(options_.max_in_flight) + ")";
  } else if (std::max(on_source, on_target) >= options_.max_in_flight_per_node) {
    queued = "node " + (on_source >= on_target ? source_node : placement->target) + " has " +
             std::to_string(std::max(on_source, on_target)) + " migrations in flight (limit " +
             std::to_string(options_.max_in_flight_per_node) + " per node)";
  }
  const std::string now = api::rfc3339_now();
  if (!queued.empty()) {
    api::set_condition(
        s.conditions,
        {"Queued", "True", "ConcurrencyLimit", "waiting: " + queued, m.generation, ""}, now);
    queue_.add_after(m.ns + "/" + m.name, std::chrono::seconds(2));
    return write_status(m, s);
  }
  if (api::find_condition(s.conditions, "Queued") != nullptr) {
    api::set_condition(s.conditions, {"Queued", "False", "Admitted", "admitted", m.generation, ""},
                       now);
  }

  // Agents watch Migrations by node label; our finalizer, set before the
  // replacement exists, makes a deletion roll back; status follows on the
  // new version.
  json finalizers = json(m.finalizers);
  if (std::find(m.finalizers.begin(), m.finalizers.end(), api::kOperatorFinalizer) ==
      m.finalizers.end()) {
    finalizers.push_back(api::kOperatorFinalizer);
  }
  json labels = {
      {"metadata",
       {{"resourceVersion", m.resource_version},
        {"finalizers", finalizers},
        {"labels",
         {{api::kSourceNodeLabel, source_node}, {api::kTargetNodeLabel, placement->target}}}}}};
  auto labelled = client_.patch(kMigrations, m.ns, m.name, kube::PatchType::kMerge, labels);
  if (!labelled.ok()) return labelled.status().with_context("label Migration " + m.name);
  api::enter_phase(s, Phase::kScheduling);
  s.source_node = source_node;
  s.target_node = placement->target;
  s.target_reasons = placement->reasons();
  s.source_pod_uid = str(*pod, "/metadata/uid");
  std::string as;
  if (auto owner = controller_of(*pod)) {
    // Its owner creates the replacement once the source is deleted; the
    // admission webhook steers that pod here and marks it for restore.
    s.owner_kind = owner->value("kind", "");
    s.owner_name = owner->value("name", "");
    s.owner_uid = owner->value("uid", "");
    as = "as the pod its " + s.owner_kind + " " + s.owner_name + " creates";
  } else {
    auto replacement = ensure_replacement_pod(m, *pod, placement->target);
    if (!replacement.ok()) return replacement.status();
    s.target_pod = str(*replacement, "/metadata/name");
    s.target_pod_uid = str(*replacement, "/metadata/uid");
    as = "as pod " + s.target_pod;
  }
  api::set_condition(
      s.conditions,
      {"Scheduled", "True", "TargetChosen",
       "moving from " + s.source_node + " to " + s.target_node + " " + as, m.generation, ""},
      now);
  api::enter_phase(s, Phase::kCheckpointing);  // the source agent's turn
  FERRY_RETURN_IF_ERROR(write_status(m, s, str(*labelled, "/metadata/resourceVersion")));
  admitted_[m.uid] = {m.ns + "/" + m.name, m.name,        m.ns,
                      m.spec.pod_name,     s.source_node, s.target_node};
  event(m, "Normal", "TargetChosen", "Schedule",
        "moving pod " + m.spec.pod_name + " from " + s.source_node + " to " + s.target_node);
  return {};
}

Result<json> MigrationController::ensure_replacement_pod(const api::Migration& m,
                                                         const json& source,
                                                         const std::string& target_node) {
  json want = replacement_pod(m, source, target_node);
  const std::string name = want["metadata"]["name"];
  auto created = client_.create(kube::resources::kPods, m.ns, want);
  if (created.ok()) return created;
  if (created.status().code() != Code::kAlreadyExists) {
    return created.status().with_context("create replacement pod " + name);
  }
  auto existing = client_.get(kube::resources::kPods, m.ns, name);
  if (!existing.ok()) return existing.status().with_context("get replacement pod " + name);
  if (str(*existing, "/metadata/annotations/ferry.dev~1restore-from") != m.uid) {
    return Status(Code::kAlreadyExists,
                  "pod " + name + " exists and does not belong to this Migration",
                  "ReplacementNameTaken");
  }
  return existing;
}

Status MigrationController::announce_snapshot(const api::Migration& m, api::MigrationStatus s) {
  if (owned(s)) {
    if (!source_deleted(s)) {
      // Recorded before the deletion: from here on the Migration can no
      // longer roll back, and the status must say so even if we crash now.
      api::set_condition(
          s.conditions,
          {api::kSourceDeletedCondition, "True", "SnapshotPublished",
           "the frozen source pod is deleted (killed while frozen); its " + s.owner_kind + " " +
               s.owner_name + " creates the replacement, which restores from the snapshot",
           m.generation, ""},
          api::rfc3339_now());
      return write_status(m, s);  // the update requeues us
    }
    FERRY_RETURN_IF_ERROR(await_owner_replacement(m, s));
    if (s.target_pod.empty()) return write_status(m, s);
  }
  kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + s.target_pod);
  if (pod && str(*pod, "/metadata/uid") == s.target_pod_uid &&
      str(*pod, "/metadata/annotations/ferry.dev~1snapshot-ready").empty()) {
    json patch = {{"metadata", {{"annotations", {{api::kSnapshotReadyAnnotation, "true"}}}}}};
    auto r =
        client_.patch(kube::resources::kPods, m.ns, s.target_pod, kube::PatchType::kMerge, patch);
    if (!r.ok()) return r.status().with_context("mark replacement pod " + s.target_pod);
  }
  return write_status(m, s);
}

Status MigrationController::await_owner_replacement(const api::Migration& m,
                                                    api::MigrationStatus& s) {
  kube::ObjectPtr source = pods_.store().get(m.ns + "/" + m.spec.pod_name);
  if (source && str(*source, "/metadata/uid") != s.source_pod_uid) source = nullptr;
  if (source && !deleting(*source)) {
    Status st = client_.remove(kube::resources::kPods, m.ns, m.spec.pod_name,
                               {.precondition_uid = s.source_pod_uid});
    if (!st.ok() && st.code() != Code::kNotFound && st.code() != Code::kConflict) {
      return st.with_context("delete source pod " + m.spec.pod_name);
    }
  }
  // The replacement: the webhook marked every pod the owner created for us
  // while none was chosen; the oldest wins, any other goes (its owner makes
  // up for it, unmarked, once one is chosen).
  auto marked = pods_.store().by_index(kRestoreFromIndex, m.uid);
  std::sort(marked.begin(), marked.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
    return std::pair(str(*a, "/metadata/creationTimestamp"), str(*a, "/metadata/name")) <
           std::pair(str(*b, "/metadata/creationTimestamp"), str(*b, "/metadata/name"));
  });
  for (const auto& pod : marked) {
    if (str(*pod, "/metadata/namespace") != m.ns || deleting(*pod)) continue;
    const std::string uid = str(*pod, "/metadata/uid");
    if (s.target_pod.empty()) {
      s.target_pod = str(*pod, "/metadata/name");
      s.target_pod_uid = uid;
      event(m, "Normal", "ReplacementCreated", "Restore",
            s.owner_kind + " " + s.owner_name + " created pod " + s.target_pod + " on " +
                str(*pod, "/spec/nodeName") + "; it restores from the snapshot");
    } else if (uid != s.target_pod_uid) {
      Status st = client_.remove(kube::resources::kPods, m.ns, str(*pod, "/metadata/name"),
                                 {.precondition_uid = uid});
      if (!st.ok() && st.code() != Code::kNotFound) return st;
    }
  }
  return {};
}

Status MigrationController::switch_over(const api::Migration& m, const api::MigrationStatus& s) {
  kube::ObjectPtr source = pods_.store().get(m.ns + "/" + m.spec.pod_name);
  if (source && !s.source_pod_uid.empty() && str(*source, "/metadata/uid") != s.source_pod_uid) {
    source = nullptr;  // a StatefulSet's replacement, under the source's name
  }
  if (source) {
    if (!deleting(*source)) {
      // The source agent kills it while frozen as soon as it sees the
      // deletion; kubelet then finds it dead.
      Status st = client_.remove(kube::resources::kPods, m.ns, m.spec.pod_name,
                                 {.precondition_uid = str(*source, "/metadata/uid")});
      if (!st.ok() && st.code() != Code::kNotFound) {
        return st.with_context("delete source pod " + m.spec.pod_name);
      }
    }
    return write_status(m, s);  // the pod's deletion requeues us
  }
  return finish(m, s, Phase::kSucceeded, {});
}

Status MigrationController::roll_back(const api::Migration& m, api::MigrationStatus s,
                                      const Status& why) {
  // The restored copy must be gone before the source may thaw.
  if (!s.target_pod.empty()) {
    kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + s.target_pod);
    if (!pod) {
      // We may have created it a moment ago, before our cache saw it: ask.
      auto live = get_live(client_, kube::resources::kPods, m.ns, s.target_pod);
      if (!live.ok()) return live.status().with_context("replacement pod");
      pod = *live;
    }
    if (pod && str(*pod, "/metadata/uid") == s.target_pod_uid) {
      if (!deleting(*pod)) {
        Status st =
            client_.remove(kube::resources::kPods, m.ns, s.target_pod,
                           {.precondition_uid = s.target_pod_uid, .grace_period_seconds = 1});
        if (!st.ok() && st.code() != Code::kNotFound) {
          return st.with_context("delete replacement pod " + s.target_pod);
        }
      } else {
        kube::ObjectPtr node = nodes_.store().get(s.target_node);
        auto since =
            api::parse_rfc3339(str(*pod, "/metadata/deletionTimestamp")).value_or(api::unix_now());
        // deletionTimestamp is when the grace period ends.
        if (!node_ready(node.get()) &&
            api::unix_now() - since > static_cast<double>(options_.force_delete_after.count())) {
          (void)client_.remove(kube::resources::kPods, m.ns, s.target_pod,
                               {.precondition_uid = s.target_pod_uid, .grace_period_seconds = 0});
        }
      }
      api::set_condition(
          s.conditions,
          {"RollingBack", "True", why.reason(),
           "waiting for replacement pod " + s.target_pod + " to stop: " + why.message(),
           m.generation, ""},
          api::rfc3339_now());
      queue_.add_after(m.ns + "/" + m.name, std::chrono::seconds(5));
      return write_status(m, s);  // the pod's deletion requeues us
    }
  }
  const Phase phase = s.phase.value_or(Phase::kPending);
  const bool touched = phase != Phase::kPending && phase != Phase::kScheduling;
  return finish(
      m, s, touched || why.code() == Code::kCancelled ? Phase::kRolledBack : Phase::kFailed, why);
}

}  // namespace ferry::operator_
