#include "migration/placement.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "api/annotations.h"

namespace ferry::operator_ {
namespace {

std::string s(const json& j, const char* pointer) {
  return j.value(json::json_pointer(pointer), std::string());
}

double parse_number(const std::string& q, size_t* suffix_at) {
  char* end = nullptr;
  double v = std::strtod(q.c_str(), &end);
  *suffix_at = static_cast<size_t>(end - q.c_str());
  return v;
}

// Sum of the containers' requests of one resource.
int64_t pod_request(const json& pod, const char* resource, bool cpu) {
  int64_t total = 0;
  for (const auto& c : pod.value(json::json_pointer("/spec/containers"), json::array())) {
    std::string q =
        c.value(json::json_pointer(std::string("/resources/requests/") + resource), std::string());
    if (q.empty()) continue;
    total += cpu ? parse_millicpu(q) : parse_bytes(q);
  }
  return total;
}

bool node_ready(const json& node) {
  for (const auto& c : node.value(json::json_pointer("/status/conditions"), json::array())) {
    if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
  }
  return false;
}

// True when some toleration of the pod matches the taint.
bool tolerated(const json& taint, const json& tolerations) {
  for (const auto& t : tolerations) {
    std::string op = t.value("operator", "Equal");
    std::string key = t.value("key", "");
    std::string effect = t.value("effect", "");
    if (!effect.empty() && effect != taint.value("effect", "")) continue;
    if (key.empty() && op == "Exists") return true;
    if (key != taint.value("key", "")) continue;
    if (op == "Exists" || t.value("value", "") == taint.value("value", "")) return true;
  }
  return false;
}

bool expression_matches(const json& expr, const json& labels) {
  std::string key = expr.value("key", "");
  std::string op = expr.value("operator", "");
  bool has = labels.contains(key);
  std::string value = has && labels[key].is_string() ? labels[key].get<std::string>() : "";
  std::set<std::string> values;
  for (const auto& v : expr.value("values", json::array())) values.insert(v.get<std::string>());
  if (op == "In") return has && values.contains(value);
  if (op == "NotIn") return !has || !values.contains(value);
  if (op == "Exists") return has;
  if (op == "DoesNotExist") return !has;
  if (op == "Gt" || op == "Lt") {
    if (!has || values.size() != 1) return false;
    long long a = std::atoll(value.c_str()), b = std::atoll(values.begin()->c_str());
    return op == "Gt" ? a > b : a < b;
  }
  return false;
}

// requiredDuringSchedulingIgnoredDuringExecution: any term may match; all
// expressions of a term must.
bool affinity_matches(const json& pod, const json& labels) {
  json terms = pod.value(
      json::json_pointer("/spec/affinity/nodeAffinity/"
                         "requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"),
      json::array());
  if (terms.empty()) return true;
  for (const auto& term : terms) {
    bool all = true;
    for (const auto& e : term.value("matchExpressions", json::array())) {
      all = all && expression_matches(e, labels);
    }
    if (all) return true;
  }
  return false;
}

std::string mib(int64_t bytes) {
  return std::to_string(bytes / (int64_t{1024} * 1024)) + "Mi";
}

}  // namespace

int64_t parse_millicpu(const std::string& q) {
  size_t at = 0;
  double v = parse_number(q, &at);
  if (q.substr(at) == "m") return static_cast<int64_t>(std::llround(v));
  return static_cast<int64_t>(std::llround(v * 1000));
}

int64_t parse_bytes(const std::string& q) {
  static const std::map<std::string, double> kSuffix = {
      {"", 1},           {"k", 1e3},           {"M", 1e6},
      {"G", 1e9},        {"T", 1e12},          {"Ki", 1024.0},
      {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
      {"m", 1e-3}};
  size_t at = 0;
  double v = parse_number(q, &at);
  auto it = kSuffix.find(q.substr(at));
  return it == kSuffix.end() ? 0 : static_cast<int64_t>(std::llround(v * it->second));
}

Status check_pod(const json* pod, const std::string& ns, const std::string& name) {
  if (pod == nullptr) {
    return Status(Code::kNotFound, "pod " + ns + "/" + name + " not found", kPodNotFound);
  }
  if (s(*pod, "/spec/nodeName").empty() || s(*pod, "/status/phase") != "Running") {
    return Status(Code::kFailedPrecondition,
                  "pod " + ns + "/" + name + " is not running on a node (phase " +
                      s(*pod, "/status/phase") + ")",
                  kPodNotRunning);
  }
  if (pod->value(json::json_pointer("/spec/hostNetwork"), false)) {
    return Status(Code::kFailedPrecondition,
                  "pod " + ns + "/" + name +
                      " uses the host network: its sockets belong to the node, not the pod, and "
                      "cannot move",
                  kHostNetworkUnsupported);
  }
  if (auto owner = controller_of(*pod)) {
    const std::string kind = owner->value("kind", "");
    if (kind != "ReplicaSet" && kind != "StatefulSet") {
      return Status(Code::kUnsupported,
                    "pod " + ns + "/" + name + " is owned by " + kind + " " +
                        owner->value("name", "") +
                        "; Ferry moves bare pods and the pods of ReplicaSets (Deployments) and "
                        "StatefulSets",
                    kOwnedPodUnsupported);
    }
    if (s(*pod, "/metadata/labels/ferry.dev~1migratable") != "true") {
      // Its owner will create the replacement; only the admission webhook,
      // which sees opted-in pods only, can mark that pod for restore.
      return Status(Code::kFailedPrecondition,
                    "pod " + ns + "/" + name + " is owned by " + kind + " " +
                        owner->value("name", "") + " but does not carry the label " +
                        api::kMigratableLabel +
                        "=true in its template, so the pod its owner creates to replace it "
                        "could not be restored",
                    kOwnedPodNotOptedIn);
    }
  }
  if (s(*pod, "/spec/runtimeClassName") != "ferry") {
    return Status(Code::kFailedPrecondition,
                  "pod " + ns + "/" + name +
                      " does not run with runtimeClassName: ferry, so it cannot be checkpointed "
                      "and restored (recreate it with the ferry RuntimeClass)",
                  kNotOnFerryRuntime);
  }
  return {};
}

std::optional<json> controller_of(const json& pod) {
  for (const auto& owner :
       pod.value(json::json_pointer("/metadata/ownerReferences"), json::array())) {
    if (owner.value("controller", false)) return owner;
  }
  return std::nullopt;
}

int compare_versions(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    long x = 0, y = 0;
    while (i < a.size() && a[i] != '.') x = x * 10 + (std::isdigit(a[i]) ? a[i] - '0' : 0), ++i;
    while (j < b.size() && b[j] != '.') y = y * 10 + (std::isdigit(b[j]) ? b[j] - '0' : 0), ++j;
    if (x != y) return x < y ? -1 : 1;
    ++i, ++j;
  }
  return 0;
}

std::optional<AgentReport> agent_report(const json& node) {
  std::string raw =
      node.value(json::json_pointer("/metadata/annotations/ferry.dev~1agent"), std::string());
  json r = json::parse(raw, nullptr, false);
  if (r.is_discarded() || !r.is_object() || !r.contains("criuVersion")) return std::nullopt;
  return AgentReport{.criu_version = r.value("criuVersion", ""),
                     .lazy_pages = r.value("lazyPages", false),
                     .page_transfer_tls = r.value("pageTransferTls", false),
                     .mem_dirty_track = r.value("memDirtyTrack", false),
                     .network_lock = r.value("networkLock", "iptables"),
                     .snapshot_format = r.value("snapshotFormat", 2)};
}

std::vector<std::string> Placement::reasons() const {
  std::vector<std::string> out;
  for (const auto& v : verdicts) {
    out.push_back(v.node + ": " + (v.node == target ? "chosen, " : "") + v.reason);
  }
  return out;
}

Result<Placement> choose_target(const json& pod, const std::vector<const json*>& nodes,
                                const std::vector<const json*>& pods, const std::string& requested,
                                const std::string& mode) {
  const std::string source = s(pod, "/spec/nodeName");
  std::optional<AgentReport> source_report;
  for (const json* node : nodes) {
    if (s(*node, "/metadata/name") == source) source_report = agent_report(*node);
  }
  if (!source_report) {
    return Status(Code::kFailedPrecondition,
                  "no Ferry agent has reported on the source node " + source +
                      " (is the ferry-agent DaemonSet running there?)",
                  kNoEligibleNode);
  }
  if (mode == "PreCopy" && !source_report->mem_dirty_track) {
    return Status(Code::kFailedPrecondition,
                  "PreCopy needs soft-dirty memory tracking, which the kernel of " + source +
                      " lacks (criu check --feature mem_dirty_track); use Cold",
                  kModeUnsupported);
  }
  if (mode == "PostCopy" && !source_report->lazy_pages) {
    return Status(Code::kFailedPrecondition,
                  "PostCopy needs userfaultfd lazy pages, which " + source + " lacks; use Cold",
                  kModeUnsupported);
  }
  if (mode == "PostCopy" && !source_report->page_transfer_tls) {
    return Status(Code::kFailedPrecondition,
                  "PostCopy serves memory only over TLS, and the CRIU on " + source +
                      " cannot (built without GnuTLS, or an agent too old to say); use Cold",
                  kModeUnsupported);
  }
  if (auto owner = controller_of(pod); owner && mode == "PostCopy") {
    // The restored copy pulls its memory from the frozen source, and the
    // owner creates that copy only once the source is deleted.
    return Status(Code::kFailedPrecondition,
                  "PostCopy serves the memory from the frozen source until the restored copy has "
                  "it all, but the replacement of a pod owned by " +
                      owner->value("kind", "") + " " + owner->value("name", "") +
                      " is created only after the source is deleted; use Cold",
                  kModeUnsupported);
  }
  if (!requested.empty() && requested == source) {
    return Status(Code::kInvalidArgument,
                  "targetNode " + requested + " is the node the pod already runs on",
                  kTargetIsSource);
  }
  const int64_t want_cpu = pod_request(pod, "cpu", true);
  const int64_t want_mem = pod_request(pod, "memory", false);
  const json tolerations = pod.value(json::json_pointer("/spec/tolerations"), json::array());
  const json selector = pod.value(json::json_pointer("/spec/nodeSelector"), json::object());

  // What the pods already placed on each node request (finished pods free theirs).
  std::map<std::string, std::pair<int64_t, int64_t>> used;
  for (const json* pp : pods) {
    const json& p = *pp;
    std::string phase = s(p, "/status/phase");
    if (phase == "Succeeded" || phase == "Failed") continue;
    auto& u = used[s(p, "/spec/nodeName")];
    u.first += pod_request(p, "cpu", true);
    u.second += pod_request(p, "memory", false);
  }

  Placement placement;
  bool requested_seen = false;
  std::vector<const json*> sorted = nodes;
  std::sort(sorted.begin(), sorted.end(), [](const json* a, const json* b) {
    return s(*a, "/metadata/name") < s(*b, "/metadata/name");
  });
  for (const json* node : sorted) {
    NodeVerdict v{.node = s(*node, "/metadata/name")};
    if (v.node == requested) requested_seen = true;
    const json labels = node->value(json::json_pointer("/metadata/labels"), json::object());
    v.free_millicpu = parse_millicpu(s(*node, "/status/allocatable/cpu")) - used[v.node].first;
    v.free_memory = parse_bytes(s(*node, "/status/allocatable/memory")) - used[v.node].second;
    std::string untolerated;
    for (const auto& t : node->value(json::json_pointer("/spec/taints"), json::array())) {
      std::string effect = t.value("effect", "");
      if ((effect == "NoSchedule" || effect == "NoExecute") && !tolerated(t, tolerations)) {
        untolerated = t.value("key", "") + ":" + effect;
        break;
      }
    }
    bool selector_ok = true;
    for (const auto& [k, val] : selector.items()) {
      selector_ok = selector_ok && labels.contains(k) && labels[k] == val;
    }
    if (v.node == source) {
      v.reason = "the source node";
    } else if (!node_ready(*node)) {
      v.reason = "not Ready";
    } else if (node->value(json::json_pointer("/spec/unschedulable"), false)) {
      v.reason = "cordoned";
    } else if (!untolerated.empty()) {
      v.reason = "taint " + untolerated + " not tolerated by the pod";
    } else if (!selector_ok) {
      v.reason = "does not match the pod's nodeSelector";
    } else if (!affinity_matches(pod, labels)) {
      v.reason = "does not match the pod's required node affinity";
    } else if (auto report = agent_report(*node); !report) {
      v.reason = "no Ferry agent has reported on this node";
    } else if (compare_versions(report->criu_version, source_report->criu_version) < 0) {
      v.reason = "CRIU " + report->criu_version + " is older than the source's " +
                 source_report->criu_version;
    } else if (report->snapshot_format < source_report->snapshot_format) {
      v.reason = "its agent reads snapshot format " + std::to_string(report->snapshot_format) +
                 ", older than the source's " + std::to_string(source_report->snapshot_format) +
                 " (upgrade its ferry-agent)";
    } else if (source_report->network_lock == "nftables" && report->network_lock != "nftables") {
      v.reason = "its CRIU cannot restore the nftables network lock the source's dump uses";
    } else if (mode == "PostCopy" && !report->lazy_pages) {
      v.reason = "no userfaultfd lazy pages for PostCopy";
    } else if (mode == "PostCopy" && !report->page_transfer_tls) {
      v.reason = "its CRIU cannot fetch PostCopy's pages over TLS (no GnuTLS)";
    } else if (v.free_millicpu < want_cpu) {
      v.reason = "not enough CPU: " + std::to_string(v.free_millicpu) + "m free, " +
                 std::to_string(want_cpu) + "m requested";
    } else if (v.free_memory < want_mem) {
      v.reason =
          "not enough memory: " + mib(v.free_memory) + " free, " + mib(want_mem) + " requested";
    } else {
      v.eligible = true;
      v.reason = "eligible, " + mib(v.free_memory) + " memory and " +
                 std::to_string(v.free_millicpu) + "m CPU free";
    }
    placement.verdicts.push_back(std::move(v));
  }

  if (!requested.empty()) {
    if (!requested_seen) {
      return Status(Code::kNotFound, "targetNode " + requested + " does not exist",
                    kTargetNodeNotFound);
    }
    for (const auto& v : placement.verdicts) {
      if (v.node != requested) continue;
      if (!v.eligible) {
        return Status(Code::kFailedPrecondition,
                      "targetNode " + requested + " cannot take the pod: " + v.reason,
                      kTargetNodeIneligible);
      }
      placement.target = requested;
      return placement;
    }
  }
  const NodeVerdict* best = nullptr;
  for (const auto& v : placement.verdicts) {
    if (!v.eligible) continue;
    if (best == nullptr || v.free_memory > best->free_memory ||
        (v.free_memory == best->free_memory && v.free_millicpu > best->free_millicpu)) {
      best = &v;
    }
  }
  if (best == nullptr) {
    std::string why;
    for (const auto& v : placement.verdicts) {
      why += (why.empty() ? "" : "; ") + v.node + ": " + v.reason;
    }
    return Status(Code::kFailedPrecondition, "no node can take the pod (" + why + ")",
                  kNoEligibleNode);
  }
  placement.target = best->node;
  return placement;
}

}  // namespace ferry::operator_
