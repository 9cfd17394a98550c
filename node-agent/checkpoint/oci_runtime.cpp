#include "checkpoint/oci_runtime.h"

#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "process/subprocess.h"

namespace ferry::checkpoint {

RuncCli::RuncCli(std::string binary, std::string root, std::chrono::milliseconds timeout)
    : binary_(std::move(binary)), root_(std::move(root)), timeout_(timeout) {}

Status RuncCli::run(const std::string& what, std::vector<std::string> args) {
  std::vector<std::string> argv = {binary_, "--root", root_};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = process::run(argv, timeout_);
  if (!r.ok()) return r.status().with_context(what);
  if (r->exit_code != 0) {
    std::string err = r->err.empty() ? r->out : r->err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    // runc prints "time=... level=error msg=..." lines; keep the last one.
    if (auto nl = err.rfind('\n'); nl != std::string::npos) err = err.substr(nl + 1);
    Code code = err.find("does not exist") != std::string::npos ? Code::kNotFound : Code::kInternal;
    return Status(code, what + ": " + err);
  }
  return {};
}

Result<ContainerState> RuncCli::state(const std::string& id) {
  auto r = process::run({binary_, "--root", root_, "state", id}, timeout_);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    if (r->err.find("does not exist") != std::string::npos) {
      return not_found("container " + id + " does not exist");
    }
    return internal_error("runc state " + id + ": " + r->err);
  }
  auto j = nlohmann::json::parse(r->out, nullptr, false);
  if (j.is_discarded()) return internal_error("runc state " + id + ": output is not JSON");
  ContainerState s{.id = j.value("id", id),
                   .pid = j.value("pid", 0),
                   .status = j.value("status", ""),
                   .bundle = j.value("bundle", "")};
  if (j.contains("annotations") && j["annotations"].is_object()) {
    for (const auto& [k, v] : j["annotations"].items()) {
      if (v.is_string()) s.annotations[k] = v.get<std::string>();
    }
  }
  return s;
}

Status RuncCli::pause(const std::string& id) {
  return run("pause " + id, {"pause", id});
}
Status RuncCli::resume(const std::string& id) {
  return run("resume " + id, {"resume", id});
}

Status RuncCli::kill_all(const std::string& id, int signal) {
  return run("kill " + id, {"kill", "--all", id, std::to_string(signal)});
}

Status RuncCli::remove(const std::string& id, bool force) {
  std::vector<std::string> args = {"delete"};
  if (force) args.emplace_back("--force");
  args.push_back(id);
  return run("delete " + id, args);
}

std::vector<std::string> RuncCli::checkpoint_argv(const std::string& id,
                                                  const CheckpointOptions& o) const {
  std::vector<std::string> argv = {binary_,      "--root",       root_,
                                   "checkpoint", "--image-path", o.image_dir};
  if (!o.work_dir.empty()) argv.insert(argv.end(), {"--work-path", o.work_dir});
  if (o.leave_running) argv.emplace_back("--leave-running");
  if (o.tcp == TcpMode::kEstablished) argv.emplace_back("--tcp-established");
  if (o.pre_dump) argv.emplace_back("--pre-dump");
  if (!o.parent_dir.empty()) argv.insert(argv.end(), {"--parent-path", o.parent_dir});
  if (o.lazy_pages) argv.emplace_back("--lazy-pages");
  if (!o.page_server.empty()) argv.insert(argv.end(), {"--page-server", o.page_server});
  if (o.status_fd >= 0) argv.insert(argv.end(), {"--status-fd", std::to_string(o.status_fd)});
  // Cgroups belong to the new container's config on restore, not to the image.
  argv.insert(argv.end(), {"--manage-cgroups-mode", "ignore"});
  argv.push_back(id);
  return argv;
}

namespace {

// Where a checkpoint's logs go (runc's output, CRIU's dump.log): the work
// dir, else the image dir, as CRIU does.
std::string log_dir(const CheckpointOptions& o) {
  return o.work_dir.empty() ? o.image_dir : o.work_dir;
}

}  // namespace

Status RuncCli::checkpoint(const std::string& id, const CheckpointOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(log_dir(options), ec);
  // runc's own output goes to a file, not to a pipe of the agent's: a runc
  // that outlives the agent (run_checkpoints_in) must not die of SIGPIPE.
  const std::string runc_log = log_dir(options) + "/runc-checkpoint.log";
  std::filesystem::remove(runc_log, ec);
  process::SpawnOptions spawn{.argv = checkpoint_argv(id, options), .output_file = runc_log};
  if (cgroups_) {
    auto procs = cgroups_->prepare(id);
    if (!procs.ok()) return procs.status().with_context("checkpoint " + id);
    spawn.cgroup_procs = std::move(procs).value();
    spawn.cgroup_namespace = cgroups_->ns_file();
  }
  auto child = process::Subprocess::spawn(spawn);
  if (!child.ok()) {
    if (cgroups_) cgroups_->release(id);
    return child.status().with_context("checkpoint " + id);
  }
  auto waited = child->wait(timeout_);
  if (!waited.ok()) child->stop(std::chrono::milliseconds(500));
  if (cgroups_) cgroups_->release(id);  // empty now: runc and CRIU have ended
  if (!waited.ok()) {
    return Status(Code::kDeadlineExceeded, "checkpoint " + id + " did not finish within " +
                                               std::to_string(timeout_.count()) + "ms");
  }
  if (process::exit_code(*waited) == 0) return {};
  std::string excerpt =
      criu_log_excerpt(log_dir(options) + (options.pre_dump ? "/pre-dump.log" : "/dump.log"));
  if (excerpt.rfind("(no CRIU log", 0) == 0) {
    // runc failed before CRIU ran: its own last words say why.
    std::ifstream in(runc_log);
    std::string last;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) last = line;
    }
    if (!last.empty()) excerpt = last;
  }
  if (excerpt.find("No space left on device") != std::string::npos ||
      excerpt.find("Disk quota exceeded") != std::string::npos) {
    return Status(Code::kResourceExhausted,
                  "checkpoint " + id + " failed: the snapshot store is full: " + excerpt,
                  "SnapshotStoreFull");
  }
  return Status(Code::kInternal, "checkpoint " + id + " failed: " + excerpt, "CheckpointFailed");
}

Result<bool> RuncCli::earlier_checkpoint_running(const std::string& id) {
  if (!cgroups_) return false;
  auto busy = cgroups_->busy(id);
  if (busy.ok() && !*busy) cgroups_->release(id);
  return busy;
}

namespace {

// runc checkpoint running as PostCopy's page server.
class RuncRunningCheckpoint final : public RunningCheckpoint {
 public:
  RuncRunningCheckpoint(process::Subprocess child, std::string id, std::string work_dir)
      : child_(std::move(child)), id_(std::move(id)), work_dir_(std::move(work_dir)) {}
  // Stops runc and with it CRIU (same process group) if still serving.
  ~RuncRunningCheckpoint() override { child_.stop(std::chrono::seconds(2)); }

  Status wait(std::chrono::milliseconds timeout) override {
    if (outcome_) return *outcome_;
    auto status = child_.wait(timeout);
    if (!status.ok()) return status.status();  // DeadlineExceeded: still serving
    int code = process::exit_code(*status);
    if (code == 0) {
      outcome_ = Status();
    } else {
      outcome_ = Status(Code::kInternal,
                        "lazy checkpoint of " + id_ + " failed (runc exit " + std::to_string(code) +
                            "): " + criu_log_excerpt(work_dir_ + "/dump.log"),
                        "PageTransferFailed");
    }
    return *outcome_;
  }

 private:
  process::Subprocess child_;
  std::string id_;
  std::string work_dir_;
  std::optional<Status> outcome_;
};

}  // namespace

Result<std::unique_ptr<RunningCheckpoint>> RuncCli::start_checkpoint(
    const std::string& id, const CheckpointOptions& options) {
  const std::string work_dir = log_dir(options);
  process::SpawnOptions spawn{.argv = checkpoint_argv(id, options),
                              .output_file = work_dir + "/runc-checkpoint.log"};
  if (options.status_fd >= 0) spawn.keep_fds.push_back(options.status_fd);
  auto child = process::Subprocess::spawn(spawn);
  if (!child.ok()) return child.status().with_context("checkpoint " + id);
  return std::unique_ptr<RunningCheckpoint>(
      new RuncRunningCheckpoint(std::move(child).value(), id, work_dir));
}

std::vector<std::string> RuncCli::restore_argv(const std::string& id, const RestoreOptions& o,
                                               const std::vector<std::string>& global_flags) const {
  std::vector<std::string> argv = {binary_};
  argv.insert(argv.end(), global_flags.begin(), global_flags.end());
  argv.insert(argv.end(), {"restore", "--bundle", o.bundle, "--image-path", o.image_dir});
  if (!o.work_dir.empty()) argv.insert(argv.end(), {"--work-path", o.work_dir});
  if (!o.pid_file.empty()) argv.insert(argv.end(), {"--pid-file", o.pid_file});
  if (!o.console_socket.empty()) argv.insert(argv.end(), {"--console-socket", o.console_socket});
  if (o.detach) argv.emplace_back("--detach");
  if (o.lazy_pages) argv.emplace_back("--lazy-pages");
  if (o.tcp == TcpMode::kEstablished) argv.emplace_back("--tcp-established");
  argv.insert(argv.end(), {"--manage-cgroups-mode", "ignore"});
  argv.push_back(id);
  return argv;
}

std::string criu_log_excerpt(const std::string& log_path, size_t lines) {
  std::ifstream in(log_path);
  if (!in) return "(no CRIU log at " + log_path + ")";
  std::deque<std::string> errors, tail;
  std::string line;
  while (std::getline(in, line)) {
    // The RLIMIT_NOFILE warning is expected without CAP_SYS_RESOURCE.
    if (line.find("Error") != std::string::npos &&
        line.find("RLIMIT_NOFILE") == std::string::npos) {
      errors.push_back(line);
      if (errors.size() > lines) errors.pop_front();
    }
    tail.push_back(line);
    if (tail.size() > lines) tail.pop_front();
  }
  const auto& chosen = errors.empty() ? tail : errors;
  std::string out;
  for (const auto& l : chosen) out += (out.empty() ? "" : " | ") + l;
  return out;
}

}  // namespace ferry::checkpoint
