// The source side of a migration, step by step (DESIGN.md §3): freeze the
// container (cgroup freezer, through the runtime), dump it with CRIU while it
// stays frozen (`runc checkpoint --leave-running` on the paused container),
// and afterwards either thaw it (rollback) or kill it while frozen (success:
// SIGKILL every task, then thaw, so no user code runs again). The source is
// never killed by a checkpoint, and a failed checkpoint leaves it exactly as
// it was (frozen if we froze it). Timings are measured here because the
// freeze window is the number users feel.
#pragma once

#include <chrono>
#include <string>

#include "checkpoint/oci_runtime.h"
#include "status/status.h"

namespace ferry::checkpoint {

struct DumpRequest {
  std::string container_id;
  std::string image_dir;  // where CRIU writes (a store staging directory)
  std::string work_dir;   // CRIU logs
  TcpMode tcp = TcpMode::kClose;
};

struct DumpResult {
  std::chrono::duration<double> freeze{};  // pause call
  std::chrono::duration<double> dump{};    // runc checkpoint
  uint64_t image_bytes = 0;
};

class CheckpointEngine {
 public:
  explicit CheckpointEngine(OciRuntime& runtime) : runtime_(runtime) {}

  // Pauses the container; already paused is fine.
  Result<std::chrono::duration<double>> freeze(const std::string& id);
  // Freezes (if needed) and dumps; the container stays frozen either way.
  Result<DumpResult> dump(const DumpRequest& request);
  // Rollback: the frozen source runs again.
  Status thaw(const std::string& id);
  // Success: no task of the frozen source ever runs user code again.
  Status kill_frozen(const std::string& id,
                     std::chrono::seconds timeout = std::chrono::seconds(30));

 private:
  Status write_criu_config(const ContainerState& state, TcpMode tcp);
  OciRuntime& runtime_;
};

uint64_t directory_bytes(const std::string& dir);

}  // namespace ferry::checkpoint
