#include "migration/controller.h"

#include <ctime>
#include <thread>
#include <vector>

#include "migration/placement.h"

namespace ferry::operator_ {
namespace {

std::string now_rfc3339() {
  time_t t = time(nullptr);
  tm utc{};
  gmtime_r(&t, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

void enter_phase(api::MigrationStatus& s, api::Phase phase) {
  if (s.phase == phase) return;
  s.phase = phase;
  s.phase_transitions.push_back({phase, now_rfc3339()});
}

// Views of cached objects; `objects` keeps them alive meanwhile.
std::vector<const json*> views(const std::vector<kube::ObjectPtr>& objects) {
  std::vector<const json*> out;
  out.reserve(objects.size());
  for (const auto& o : objects) out.push_back(o.get());
  return out;
}

}  // namespace

MigrationController::MigrationController(kube::Client& client, std::string instance)
    : client_(client),
      migrations_(client, kMigrations),
      pods_(client, kube::resources::kPods),
      nodes_(client, kube::resources::kNodes),
      events_(client, {.reporting_controller = "ferry.dev/operator",
                       .reporting_instance = std::move(instance)}) {
  migrations_.add_handlers(
      {.on_add = [this](const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); },
       .on_update = [this](const kube::ObjectPtr&,
                           const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); },
       .on_delete = [this](const kube::ObjectPtr& o) { queue_.add(kube::object_key(*o)); }});
  // A pod or node change can make a waiting Migration possible: requeue
  // every non-final Migration (few at a time, so this stays cheap).
  auto requeue_all = [this] {
    for (const auto& m : migrations_.store().list()) {
      std::string phase = m->value(json::json_pointer("/status/phase"), std::string());
      if (phase.empty() || phase == "Pending") queue_.add(kube::object_key(*m));
    }
  };
  kube::EventHandlers on_change{
      .on_add = [requeue_all](const kube::ObjectPtr&) { requeue_all(); },
      .on_update = [requeue_all](const kube::ObjectPtr&, const kube::ObjectPtr&) { requeue_all(); },
      .on_delete = [requeue_all](const kube::ObjectPtr&) { requeue_all(); }};
  pods_.add_handlers(on_change);
  nodes_.add_handlers(on_change);
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
        Status s = reconcile(*key);
        if (s.ok()) {
          queue_.forget(*key);
        } else {
          queue_.add_rate_limited(*key);  // transient (API errors): retry with backoff
        }
        queue_.done(*key);
      }
    });
  }
  std::stop_callback on_stop(stop, [this] { queue_.shut_down(); });
  pool.clear();  // joins the workers once the queue is shut down and drained
}

Status MigrationController::write_status(const api::Migration& m,
                                         const api::MigrationStatus& status) {
  if (status == m.status) return {};  // write only what changed
  json body = api::status_to_json(status);
  body["metadata"] = {{"resourceVersion", m.resource_version}};
  auto r = client_.patch(kMigrations, m.ns, m.name, kube::PatchType::kMerge, body,
                         {.subresource = "status"});
  return r.ok() ? Status() : r.status().with_context("update status of " + m.ns + "/" + m.name);
}

Status MigrationController::fail(const api::Migration& m, api::MigrationStatus s, const Status& why,
                                 api::Phase phase) {
  enter_phase(s, phase);
  s.failure_reason = why.reason();
  s.failure_message = why.message();
  api::set_condition(s.conditions,
                     {"Failed", "True", why.reason(), why.message(), m.generation, ""},
                     now_rfc3339());
  FERRY_RETURN_IF_ERROR(write_status(m, s));
  json regarding = {{"apiVersion", "ferry.dev/v1alpha1"},
                    {"kind", "Migration"},
                    {"metadata", {{"name", m.name}, {"namespace", m.ns}, {"uid", m.uid}}}};
  (void)events_.record(regarding, "Warning", why.reason(), "Admit", why.message());
  return {};
}

Status MigrationController::reconcile(const std::string& key) {
  kube::ObjectPtr obj = migrations_.store().get(key);
  if (!obj) return {};  // deleted: nothing to clean up before the agent phases exist
  auto decoded = api::migration_from_json(*obj);
  if (!decoded.ok()) return {};  // the schema prevents this; never retry garbage
  const api::Migration& m = *decoded;
  if (m.status.phase && api::is_final(*m.status.phase)) return {};

  api::MigrationStatus s = m.status;
  s.observed_generation = m.generation;
  if (m.spec.cancel) {
    return fail(m, s,
                Status(Code::kCancelled, "cancelled by the user before the switch", "Cancelled"),
                api::Phase::kRolledBack);
  }
  if (s.phase && *s.phase != api::Phase::kPending && *s.phase != api::Phase::kScheduling) {
    return write_status(m, s);  // agent-driven phases: not this controller's yet
  }
  enter_phase(s, api::Phase::kPending);

  kube::ObjectPtr pod = pods_.store().get(m.ns + "/" + m.spec.pod_name);
  if (Status ok = check_pod(pod.get(), m.ns, m.spec.pod_name); !ok.ok()) {
    return fail(m, s, ok, api::Phase::kFailed);
  }
  const auto nodes = nodes_.store().list();
  const auto pods = pods_.store().list();
  auto placement = choose_target(*pod, views(nodes), views(pods), m.spec.target_node);
  if (!placement.ok()) return fail(m, s, placement.status(), api::Phase::kFailed);

  enter_phase(s, api::Phase::kScheduling);
  s.source_node = pod->value(json::json_pointer("/spec/nodeName"), std::string());
  s.target_node = placement->target;
  s.target_reasons = placement->reasons();
  api::set_condition(s.conditions,
                     {"Scheduled", "True", "TargetChosen",
                      "moving from " + s.source_node + " to " + s.target_node, m.generation, ""},
                     now_rfc3339());
  // Handed to the source node's agent, which freezes and checkpoints.
  enter_phase(s, api::Phase::kCheckpointing);
  return write_status(m, s);
}

}  // namespace ferry::operator_
