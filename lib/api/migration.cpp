#include "api/migration.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace ferry::api {
namespace {

using nlohmann::json;

constexpr std::array<std::pair<Phase, std::string_view>, 9> kPhases = {{
    {Phase::kPending, "Pending"},
    {Phase::kScheduling, "Scheduling"},
    {Phase::kCheckpointing, "Checkpointing"},
    {Phase::kTransferring, "Transferring"},
    {Phase::kRestoring, "Restoring"},
    {Phase::kSwitching, "Switching"},
    {Phase::kSucceeded, "Succeeded"},
    {Phase::kFailed, "Failed"},
    {Phase::kRolledBack, "RolledBack"},
}};

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
int64_t num(const json& j, const char* key, int64_t fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

}  // namespace

std::string_view phase_name(Phase phase) {
  for (const auto& [p, name] : kPhases) {
    if (p == phase) return name;
  }
  return "Unknown";
}

Result<Phase> parse_phase(std::string_view name) {
  for (const auto& [p, n] : kPhases) {
    if (n == name) return p;
  }
  return invalid_argument("unknown Migration phase \"" + std::string(name) + "\"");
}

bool is_final(Phase phase) {
  return phase == Phase::kSucceeded || phase == Phase::kFailed || phase == Phase::kRolledBack;
}

const Condition* find_condition(const std::vector<Condition>& conditions, std::string_view type) {
  for (const auto& c : conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

bool condition_true(const std::vector<Condition>& conditions, std::string_view type) {
  const Condition* c = find_condition(conditions, type);
  return c != nullptr && c->status == "True";
}

bool set_condition(std::vector<Condition>& conditions, Condition c, const std::string& now) {
  for (auto& existing : conditions) {
    if (existing.type != c.type) continue;
    c.last_transition_time = existing.status == c.status ? existing.last_transition_time : now;
    bool changed = existing.status != c.status || existing.reason != c.reason ||
                   existing.message != c.message ||
                   existing.observed_generation != c.observed_generation;
    existing = std::move(c);
    return changed;
  }
  c.last_transition_time = now;
  conditions.push_back(std::move(c));
  return true;
}

bool MigrationStatus::operator==(const MigrationStatus& o) const {
  return status_to_json(*this) == status_to_json(o);
}

std::string format_seconds(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fs", seconds);
  return buf;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string rfc3339_now() {
  const double now = unix_now();
  const auto secs = static_cast<time_t>(now);
  const int millis = static_cast<int>((now - static_cast<double>(secs)) * 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", millis);
  return buf;
}

std::optional<double> parse_rfc3339(const std::string& time) {
  tm utc{};
  const char* rest = strptime(time.c_str(), "%Y-%m-%dT%H:%M:%S", &utc);
  if (rest == nullptr) return std::nullopt;
  double fraction = 0;
  if (*rest == '.') {
    double scale = 0.1;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest, scale /= 10) {
      fraction += (*rest - '0') * scale;
    }
  }
  if (std::string_view(rest) != "Z" && std::string_view(rest) != "+00:00") return std::nullopt;
  return static_cast<double>(timegm(&utc)) + fraction;
}

std::optional<double> entered(const MigrationStatus& status, Phase phase) {
  for (auto it = status.phase_transitions.rbegin(); it != status.phase_transitions.rend(); ++it) {
    if (it->phase == phase) return parse_rfc3339(it->time);
  }
  return std::nullopt;
}

void enter_phase(MigrationStatus& status, Phase phase) {
  if (status.phase == phase) return;
  status.phase = phase;
  status.phase_transitions.push_back({phase, rfc3339_now()});
}

Result<Migration> migration_from_json(const json& object) {
  if (!object.is_object()) return invalid_argument("Migration is not a JSON object");
  if (auto kind = str(object, "kind"); !kind.empty() && kind != "Migration") {
    return invalid_argument("expected kind Migration, got " + kind);
  }
  Migration m;
  const json meta = object.value("metadata", json::object());
  m.ns = str(meta, "namespace");
  m.name = str(meta, "name");
  m.uid = str(meta, "uid");
  m.resource_version = str(meta, "resourceVersion");
  m.generation = num(meta, "generation");
  m.deleting = meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null();
  for (const auto& f : meta.value("finalizers", json::array())) {
    if (f.is_string()) m.finalizers.push_back(f.get<std::string>());
  }
  const json spec = object.value("spec", json::object());
  m.spec.pod_name = str(spec, "podName");
  m.spec.target_node = str(spec, "targetNode");
  m.spec.mode = str(spec, "mode");
  const json timeouts = spec.value("timeouts", json::object());
  if (auto v = num(timeouts, "completionSeconds"); v > 0) m.spec.completion_seconds = v;
  if (auto v = num(timeouts, "progressSeconds"); v > 0) m.spec.progress_seconds = v;
  m.spec.cancel = spec.value("cancel", false);

  const json st = object.value("status", json::object());
  MigrationStatus& s = m.status;
  s.observed_generation = num(st, "observedGeneration");
  if (auto phase = str(st, "phase"); !phase.empty()) {
    auto p = parse_phase(phase);
    if (!p.ok()) return p.status();
    s.phase = *p;
  }
  s.source_node = str(st, "sourceNode");
  s.target_node = str(st, "targetNode");
  s.target_pod = str(st, "targetPod");
  s.target_pod_uid = str(st, "targetPodUID");
  s.source_pod_uid = str(st, "sourcePodUID");
  s.owner_kind = str(st, "ownerKind");
  s.owner_name = str(st, "ownerName");
  s.owner_uid = str(st, "ownerUID");
  if (auto e = st.find("effective"); e != st.end() && e->is_object()) {
    s.effective = Effective{.policy = str(*e, "policy"),
                            .mode = str(*e, "mode"),
                            .completion_seconds = num(*e, "completionSeconds"),
                            .progress_seconds = num(*e, "progressSeconds")};
  }
  for (const auto& r : st.value("targetReasons", json::array())) {
    if (r.is_string()) s.target_reasons.push_back(r.get<std::string>());
  }
  for (const auto& c : st.value("conditions", json::array())) {
    s.conditions.push_back({str(c, "type"), str(c, "status"), str(c, "reason"), str(c, "message"),
                            num(c, "observedGeneration"), str(c, "lastTransitionTime")});
  }
  for (const auto& t : st.value("phaseTransitionTimestamps", json::array())) {
    auto p = parse_phase(str(t, "phase"));
    if (!p.ok()) return p.status();
    s.phase_transitions.push_back({*p, str(t, "time")});
  }
  const json d = st.value("durations", json::object());
  s.freeze = str(d, "freeze");
  s.checkpoint = str(d, "checkpoint");
  s.transfer = str(d, "transfer");
  s.restore = str(d, "restore");
  s.total = str(d, "total");
  const json b = st.value("bytes", json::object());
  s.bytes_checkpointed = num(b, "checkpointed");
  s.bytes_transferred = num(b, "transferred");
  const json f = st.value("failure", json::object());
  s.failure_reason = str(f, "reason");
  s.failure_message = str(f, "message");
  s.criu_log_excerpt = str(f, "criuLogExcerpt");
  return m;
}

json status_to_json(const MigrationStatus& s) {
  json st = json::object();
  st["observedGeneration"] = s.observed_generation;
  if (s.phase) st["phase"] = std::string(phase_name(*s.phase));
  auto put = [&st](const char* key, const std::string& v) {
    if (!v.empty()) st[key] = v;
  };
  put("sourceNode", s.source_node);
  put("targetNode", s.target_node);
  put("targetPod", s.target_pod);
  put("targetPodUID", s.target_pod_uid);
  put("sourcePodUID", s.source_pod_uid);
  put("ownerKind", s.owner_kind);
  put("ownerName", s.owner_name);
  put("ownerUID", s.owner_uid);
  if (s.effective) {
    st["effective"] = {{"policy", s.effective->policy},
                       {"mode", s.effective->mode},
                       {"completionSeconds", s.effective->completion_seconds},
                       {"progressSeconds", s.effective->progress_seconds}};
  }
  if (!s.target_reasons.empty()) st["targetReasons"] = s.target_reasons;
  if (!s.conditions.empty()) {
    json cs = json::array();
    for (const auto& c : s.conditions) {
      cs.push_back({{"type", c.type},
                    {"status", c.status},
                    {"reason", c.reason},
                    {"message", c.message},
                    {"observedGeneration", c.observed_generation},
                    {"lastTransitionTime", c.last_transition_time}});
    }
    st["conditions"] = cs;
  }
  if (!s.phase_transitions.empty()) {
    json ts = json::array();
    for (const auto& t : s.phase_transitions) {
      ts.push_back({{"phase", std::string(phase_name(t.phase))}, {"time", t.time}});
    }
    st["phaseTransitionTimestamps"] = ts;
  }
  json d = json::object();
  auto dur = [&d](const char* key, const std::string& v) {
    if (!v.empty()) d[key] = v;
  };
  dur("freeze", s.freeze);
  dur("checkpoint", s.checkpoint);
  dur("transfer", s.transfer);
  dur("restore", s.restore);
  dur("total", s.total);
  if (!d.empty()) st["durations"] = d;
  if (s.bytes_checkpointed || s.bytes_transferred) {
    st["bytes"] = {{"checkpointed", s.bytes_checkpointed}, {"transferred", s.bytes_transferred}};
  }
  if (!s.failure_reason.empty() || !s.failure_message.empty()) {
    st["failure"] = {{"reason", s.failure_reason},
                     {"message", s.failure_message},
                     {"criuLogExcerpt", s.criu_log_excerpt}};
  }
  return json{{"status", st}};
}

}  // namespace ferry::api
