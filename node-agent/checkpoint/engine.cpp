#include "checkpoint/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <thread>

#include "api/annotations.h"

namespace ferry::checkpoint {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

uint64_t directory_bytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

Result<std::chrono::duration<double>> CheckpointEngine::freeze(const std::string& id) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  auto start = Clock::now();
  if (state->status == "paused") return std::chrono::duration<double>(0);
  if (state->status != "running") {
    return Status(Code::kFailedPrecondition,
                  "container " + id + " is " + state->status + ", not running", "NotRunning");
  }
  FERRY_RETURN_IF_ERROR(runtime_.pause(id));
  return std::chrono::duration<double>(Clock::now() - start);
}

Status CheckpointEngine::write_criu_config(const ContainerState& state, TcpMode tcp) {
  auto it = state.annotations.find(api::kCriuConfigAnnotation);
  if (it == state.annotations.end()) {
    if (tcp == TcpMode::kEstablished) return {};  // the CLI flag is enough
    return Status(Code::kFailedPrecondition,
                  "container " + state.id +
                      " was not created through ferry-runc (no CRIU config file): cannot "
                      "close its TCP connections for a restore on another node",
                  "NotOnFerryRuntime");
  }
  // Only what runc has no flag for; runc passes the file to CRIU as-is.
  std::string contents = tcp == TcpMode::kClose ? "tcp-close\n" : "";
  std::string tmp = it->second + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return internal_error("cannot write CRIU config " + tmp);
  bool ok = write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size());
  close(fd);
  if (!ok || rename(tmp.c_str(), it->second.c_str()) != 0) {
    return internal_error("cannot write CRIU config " + it->second);
  }
  return {};
}

Result<DumpResult> CheckpointEngine::dump(const DumpRequest& request) {
  DumpResult result;
  auto state = runtime_.state(request.container_id);
  if (!state.ok()) return state.status();
  FERRY_RETURN_IF_ERROR(write_criu_config(*state, request.tcp));
  auto frozen = freeze(request.container_id);
  if (!frozen.ok()) return frozen.status();
  result.freeze = *frozen;
  auto start = Clock::now();
  Status s = runtime_.checkpoint(request.container_id, {.image_dir = request.image_dir,
                                                        .work_dir = request.work_dir,
                                                        .leave_running = true,
                                                        .tcp = request.tcp});
  if (!s.ok()) return s;  // still frozen: the caller decides to thaw or retry
  result.dump = Clock::now() - start;
  result.image_bytes = directory_bytes(request.image_dir);
  return result;
}

Status CheckpointEngine::thaw(const std::string& id) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  if (state->status == "running") return {};
  return runtime_.resume(id);
}

Status CheckpointEngine::kill_frozen(const std::string& id, std::chrono::seconds timeout) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  if (state->status != "paused") {
    // Killing a running source would let it run user code after the dump.
    return Status(Code::kFailedPrecondition,
                  "container " + id + " is " + state->status + ", not frozen: refusing to kill",
                  "NotFrozen");
  }
  // SIGKILL is queued for frozen tasks and acted on in the kernel on thaw,
  // before any return to user space. (runc's `kill --all` itself freezes,
  // signals and thaws on cgroup v1; on v2 it uses cgroup.kill. Thaw here
  // only if the runtime left the cgroup frozen.)
  FERRY_RETURN_IF_ERROR(runtime_.kill_all(id, SIGKILL));
  if (auto after = runtime_.state(id); after.ok() && after->status == "paused") {
    FERRY_RETURN_IF_ERROR(runtime_.resume(id));
  }
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto s = runtime_.state(id);
    if (!s.ok() || s->status == "stopped") return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status(Code::kDeadlineExceeded, "container " + id + " did not stop after SIGKILL");
}

}  // namespace ferry::checkpoint
