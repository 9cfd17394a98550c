// Where a pod may go (DESIGN.md §3 step 2, "choosing the destination
// node"): the checks that make a Migration possible at all, and the choice
// of a target node. Both are pure functions of the objects in the
// informers' caches, so every rule is unit-tested without a cluster.
//
// A node is eligible when it is not the source, is Ready, is not cordoned,
// tolerates-wise accepts the pod (NoSchedule/NoExecute taints), matches the
// pod's nodeSelector and required node affinity, and has the pod's CPU and
// memory requests free, and its Ferry agent reported itself compatible
// (node annotation ferry.dev/agent: a CRIU at least as new as the source's,
// userfaultfd for PostCopy). Among eligible nodes the one with the most free
// memory wins (ties: most free CPU, then name). Every node's verdict is
// kept as a human sentence for status.targetReasons.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::operator_ {

using nlohmann::json;

// Refusals a user can act on, as Status reasons (also condition reasons).
inline constexpr const char* kPodNotFound = "PodNotFound";
inline constexpr const char* kNotOnFerryRuntime = "NotOnFerryRuntime";
inline constexpr const char* kHostNetworkUnsupported = "HostNetworkUnsupported";
inline constexpr const char* kPodNotRunning = "PodNotRunning";
inline constexpr const char* kTargetIsSource = "TargetIsSource";
inline constexpr const char* kTargetNodeNotFound = "TargetNodeNotFound";
inline constexpr const char* kTargetNodeIneligible = "TargetNodeIneligible";
inline constexpr const char* kNoEligibleNode = "NoEligibleNode";
inline constexpr const char* kOwnedPodUnsupported = "OwnedPodUnsupported";
inline constexpr const char* kModeUnsupported = "ModeUnsupported";
inline constexpr const char* kOwnedPodNotOptedIn = "OwnedPodNotOptedIn";

// Checks the pod itself can be migrated: exists, runs on a node, uses the
// ferry RuntimeClass, does not use the host network, and has either no
// controlling owner or a ReplicaSet / StatefulSet one and the
// ferry.dev/migratable=true label (so the admission webhook sees the
// replacement its owner creates). `pod` may be null.
Status check_pod(const json* pod, const std::string& ns, const std::string& name);

// The ownerReference with controller: true, if any.
std::optional<json> controller_of(const json& pod);

struct NodeVerdict {
  std::string node;
  bool eligible = false;
  std::string reason;  // why not, or the free resources when eligible
  int64_t free_memory = 0;
  int64_t free_millicpu = 0;
};

struct Placement {
  std::string target;
  std::vector<NodeVerdict> verdicts;  // every node considered, in name order
  // One sentence per node, for status.targetReasons.
  std::vector<std::string> reasons() const;
};

// Chooses the target node for `pod` among `nodes`, given all `pods` (to
// sum what is already requested on each node). `requested` non-empty:
// that node or a clear refusal. `mode` is the Migration's spec.mode: a
// PostCopy needs userfaultfd on both nodes and a bare pod (an owned pod's
// replacement comes only after its source is deleted, and PostCopy needs
// the source until the transfer ends), a PreCopy soft-dirty tracking on the
// source (refused with kModeUnsupported when the source lacks it).
// Objects are read in place (the informer caches' shared objects), never
// copied: this runs on every reconcile, over every pod of the cluster.
Result<Placement> choose_target(const json& pod, const std::vector<const json*>& nodes,
                                const std::vector<const json*>& pods, const std::string& requested,
                                const std::string& mode = "Cold");

// What an agent reported about its node (the ferry.dev/agent annotation).
struct AgentReport {
  std::string criu_version;  // "4.2.1"
  bool lazy_pages = false;
  // Its CRIU can encrypt PostCopy's page transfer (GnuTLS), the only way
  // agents transfer pages; reports from before it was reported: false.
  bool page_transfer_tls = false;
  bool mem_dirty_track = false;
  // CRIU's network lock for the agent's dumps ("nftables" or "iptables";
  // reports from before it was reported: "iptables"). A restore locks the
  // way the dump recorded, so a target must support the source's.
  std::string network_lock = "iptables";
  // The snapshot manifest format the agent writes, and the newest it reads
  // (store/manifest.h); reports from before it was reported: 2.
  int snapshot_format = 2;
};
// nullopt when the node carries no (parseable) report: no agent runs there.
std::optional<AgentReport> agent_report(const json& node);
// -1, 0, 1 comparing dotted version numbers ("4.2.1" < "4.10").
int compare_versions(const std::string& a, const std::string& b);

// Quantities as Kubernetes writes them: "100m", "2", "128Mi", "1G", "1e3".
int64_t parse_millicpu(const std::string& q);
int64_t parse_bytes(const std::string& q);

}  // namespace ferry::operator_
