// The side-effect seam between Ferry and the container runtime (runc, or
// crun where its CLI agrees). Everything the agent does to a container -
// freeze, thaw, kill while frozen, checkpoint, restore - goes through this
// narrow interface, so the engine's logic is unit-tested against a fake and
// the real implementation is one file of argv building. It drives the
// runtime against the state root that containerd or CRI-O use
// (e.g. /run/containerd/runc/k8s.io), exactly as their shims do.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_cgroups.h"
#include "status/status.h"

namespace ferry::checkpoint {

struct ContainerState {
  std::string id;
  int pid = 0;
  std::string status;  // created, running, paused, stopped
  std::string bundle;
  std::map<std::string, std::string> annotations;
};

enum class TcpMode {
  kEstablished,  // restore connections as they were (same IP only)
  kClose,        // restore them closed: peers see a reset (new IP)
};

struct CheckpointOptions {
  std::string image_dir;
  std::string work_dir;  // CRIU logs (dump.log)
  bool leave_running = true;
  TcpMode tcp = TcpMode::kClose;
  std::string parent_dir;   // PreCopy: previous pre-dump
  bool pre_dump = false;    // PreCopy iteration
  bool lazy_pages = false;  // PostCopy: serve memory from a page server
  std::string page_server;  // host:port for lazy pages
  int status_fd = -1;       // PostCopy: CRIU writes \0 here once pages can be served
};

struct RestoreOptions {
  std::string bundle;
  std::string image_dir;
  std::string work_dir;  // CRIU logs (restore.log)
  std::string pid_file;
  std::string console_socket;
  bool detach = true;
  bool lazy_pages = false;
  TcpMode tcp = TcpMode::kClose;
};

// A checkpoint that keeps running after its images are written: PostCopy,
// where runc and CRIU stay up as the page server until the target's
// `criu lazy-pages` has fetched every page. Destroying the handle stops
// (SIGTERM, then SIGKILL) and reaps whatever still runs, so no page server
// outlives its owner.
class RunningCheckpoint {
 public:
  virtual ~RunningCheckpoint() = default;
  // Ok once the checkpoint ended well (every page served);
  // DeadlineExceeded while it still runs after `timeout`; otherwise why it
  // failed (with CRIU's log lines). Once ended, returns the same outcome.
  virtual Status wait(std::chrono::milliseconds timeout) = 0;
  // True once it ended, either way.
  bool finished() { return wait(std::chrono::milliseconds(0)).code() != Code::kDeadlineExceeded; }
};

class OciRuntime {
 public:
  virtual ~OciRuntime() = default;
  virtual Result<ContainerState> state(const std::string& id) = 0;
  virtual Status pause(const std::string& id) = 0;
  virtual Status resume(const std::string& id) = 0;
  // Sends `signal` to every process of the container.
  virtual Status kill_all(const std::string& id, int signal) = 0;
  virtual Status checkpoint(const std::string& id, const CheckpointOptions& options) = 0;
  // Starts a checkpoint in the background (PostCopy); `options.status_fd`
  // is a descriptor of the caller's that the runtime process inherits.
  virtual Result<std::unique_ptr<RunningCheckpoint>> start_checkpoint(
      const std::string& id, const CheckpointOptions& options) = 0;
  virtual Status remove(const std::string& id, bool force) = 0;
  // Whether a checkpoint of `id` that an earlier agent process started is
  // still running (checkpoint_cgroups.h: it outlives the agent). False once
  // it has ended, and then its traces are gone.
  virtual Result<bool> earlier_checkpoint_running(const std::string& id) = 0;
};

// The runc command line (also accepted by crun for these verbs).
class RuncCli final : public OciRuntime {
 public:
  // `binary`: path or name of runc; `root`: its --root state directory.
  RuncCli(std::string binary, std::string root,
          std::chrono::milliseconds timeout = std::chrono::minutes(10));

  Result<ContainerState> state(const std::string& id) override;
  Status pause(const std::string& id) override;
  Status resume(const std::string& id) override;
  Status kill_all(const std::string& id, int signal) override;
  Status checkpoint(const std::string& id, const CheckpointOptions& options) override;
  Result<std::unique_ptr<RunningCheckpoint>> start_checkpoint(
      const std::string& id, const CheckpointOptions& options) override;
  Status remove(const std::string& id, bool force) override;
  Result<bool> earlier_checkpoint_running(const std::string& id) override;

  // Runs every `checkpoint` (not PostCopy's page server, which must stop
  // with the agent's transfer) in these cgroups, so that it outlives the
  // agent. Without: in the caller's cgroup.
  void run_checkpoints_in(CheckpointCgroups cgroups) { cgroups_ = std::move(cgroups); }

  // The argv of `runc restore` for these options (ferry-runc execs it).
  std::vector<std::string> restore_argv(const std::string& id, const RestoreOptions& options,
                                        const std::vector<std::string>& global_flags) const;
  // The argv of `runc checkpoint` (exposed for tests and benchmarks).
  std::vector<std::string> checkpoint_argv(const std::string& id,
                                           const CheckpointOptions& options) const;

 private:
  Status run(const std::string& what, std::vector<std::string> args);
  std::string binary_;
  std::string root_;
  std::chrono::milliseconds timeout_;
  std::optional<CheckpointCgroups> cgroups_;
};

// The last `lines` lines of a CRIU log that say "Error" (or the log's tail
// when none do), for failure conditions a human can act on.
std::string criu_log_excerpt(const std::string& log_path, size_t lines = 8);

}  // namespace ferry::checkpoint
