// The Migration resource (crds/ferry.dev_migrations.yaml) as C++ types with
// a JSON codec, shared by the operator and the agent. Status follows the
// Kubernetes conventions KubeVirt's VirtualMachineInstanceMigration uses: a
// phase enum with is_final(), conditions whose lastTransitionTime moves only
// when their status flips, and per-phase transition timestamps.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "status/status.h"

namespace ferry::api {

inline constexpr const char* kGroup = "ferry.dev";
inline constexpr const char* kVersion = "v1alpha1";

enum class Phase {
  kPending,
  kScheduling,
  kCheckpointing,
  kTransferring,
  kRestoring,
  kSwitching,
  kSucceeded,
  kFailed,
  kRolledBack,
};
std::string_view phase_name(Phase phase);
Result<Phase> parse_phase(std::string_view name);
// Succeeded, Failed and RolledBack: nothing more will happen.
bool is_final(Phase phase);

struct Condition {
  std::string type;
  std::string status;  // "True", "False", "Unknown"
  std::string reason;  // CamelCase, machine-readable
  std::string message;
  int64_t observed_generation = 0;
  std::string last_transition_time;  // RFC 3339
};

// Sets `c` in `conditions` (by type). lastTransitionTime becomes `now` only
// when the condition is new or its status flips; returns whether anything
// changed, so callers write status only when it did.
bool set_condition(std::vector<Condition>& conditions, Condition c, const std::string& now);
const Condition* find_condition(const std::vector<Condition>& conditions, std::string_view type);
// Whether condition `type` is present with status "True".
bool condition_true(const std::vector<Condition>& conditions, std::string_view type);

// Set by the operator just before it deletes an owned pod's frozen source
// (its owner then creates the replacement). From then on nothing can be
// rolled back: the snapshot is the only copy of the pod's state. The
// operator, the agents and the admission webhook all go by it.
inline constexpr const char* kSourceDeletedCondition = "SourceDeleted";

// PostCopy: set True by the source agent once the restored copy has pulled
// every page from the source's page server. Until then the restored copy
// runs on memory that still lives in the frozen source, so the Migration
// stays in Restoring (and can roll back), and the source may not go.
inline constexpr const char* kPagesTransferredCondition = "PagesTransferred";

struct MigrationSpec {
  std::string pod_name;
  std::string target_node;  // empty: Ferry chooses
  std::string mode;         // empty: the policy's, else Cold (see Effective)
  std::optional<int64_t> completion_seconds;
  std::optional<int64_t> progress_seconds;
  bool cancel = false;
};

inline constexpr int64_t kDefaultCompletionSeconds = 600;
inline constexpr int64_t kDefaultProgressSeconds = 120;

// The settings a Migration runs with (status.effective).
struct Effective {
  std::string policy;
  std::string mode;
  int64_t completion_seconds = 0;
  int64_t progress_seconds = 0;
  bool operator==(const Effective&) const = default;
};

struct PhaseTransition {
  Phase phase = Phase::kPending;
  std::string time;
};

struct MigrationStatus {
  int64_t observed_generation = 0;
  std::optional<Phase> phase;  // unset until the operator first acts
  std::string source_node;
  std::string target_node;
  std::string target_pod;
  std::string target_pod_uid;
  std::string source_pod_uid;  // a StatefulSet's replacement has the source's name
  // The source pod's controller (ReplicaSet, StatefulSet) when it has one:
  // that owner creates the replacement, after the source is gone.
  std::string owner_kind, owner_name, owner_uid;
  std::optional<Effective> effective;
  std::vector<std::string> target_reasons;
  std::vector<Condition> conditions;
  std::vector<PhaseTransition> phase_transitions;
  std::string freeze, checkpoint, transfer, restore, total;  // durations, "1.234s"
  int64_t bytes_checkpointed = 0;
  int64_t bytes_transferred = 0;
  std::string failure_reason;
  std::string failure_message;
  std::string criu_log_excerpt;

  bool operator==(const MigrationStatus&) const;
};

struct Migration {
  std::string ns;
  std::string name;
  std::string uid;
  std::string resource_version;
  int64_t generation = 0;
  bool deleting = false;  // metadata.deletionTimestamp is set
  std::vector<std::string> finalizers;
  MigrationSpec spec;
  MigrationStatus status;
};

// Decodes a Migration object as the API returns it. Tolerates unknown
// fields (newer servers); rejects a wrong kind or an unknown phase.
Result<Migration> migration_from_json(const nlohmann::json& object);
// The status subresource body: {"status": ...}, for update_status/patch.
nlohmann::json status_to_json(const MigrationStatus& status);
// "1.234s": the duration format the CRD's durations use.
std::string format_seconds(double seconds);

// Timestamps as status carries them: RFC 3339 UTC with milliseconds, so
// phase durations can be computed from phaseTransitionTimestamps.
std::string rfc3339_now();
// Seconds since the Unix epoch of an RFC 3339 UTC time (fractions and a
// trailing Z or +00:00); nullopt when it does not parse.
std::optional<double> parse_rfc3339(const std::string& time);
double unix_now();

// When the Migration entered `phase` (the last time), if it did.
std::optional<double> entered(const MigrationStatus& status, Phase phase);
// Appends a transition and sets the phase; no-op when already there.
void enter_phase(MigrationStatus& status, Phase phase);

}  // namespace ferry::api
