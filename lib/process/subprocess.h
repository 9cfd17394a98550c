// Child processes owned by RAII handles. The agent runs criu and runc, the
// test fixtures run etcd and kube-apiserver; all of them need the same care:
// argv without a shell, output to a file or captured, a deadline, a process
// group so a kill reaches grandchildren, and no child outliving its owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::process {

struct SpawnOptions {
  std::vector<std::string> argv;           // argv[0] is looked up in PATH
  std::map<std::string, std::string> env;  // added to (and overriding) the parent's
  std::string working_dir;                 // empty: inherit
  std::string output_file;                 // stdout+stderr appended here; empty: /dev/null
  bool new_process_group = true;           // so stop() reaches grandchildren
  // Explicit stdio (e.g. pipes the caller reads, as a container shim does);
  // -1 keeps the defaults above. The caller keeps ownership of these fds.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // Descriptors the child inherits at the same numbers (e.g. a status pipe
  // passed as `runc checkpoint --status-fd N`); the caller keeps ownership.
  std::vector<int> keep_fds;
  // cgroup.procs files (one per hierarchy) the child moves itself into
  // before exec, so that it and what it starts are not in the caller's
  // cgroup: killing every process of that cgroup (what a container runtime
  // does when the caller's container stops) then leaves them running.
  // spawn() fails, with the child reaped and the file and errno named, if
  // one refuses.
  std::vector<std::string> cgroup_procs;
  // A cgroup namespace (e.g. /proc/1/ns/cgroup) the child enters before it
  // joins `cgroup_procs`: a cgroup outside the caller's own namespace can be
  // joined only from a namespace that sees it. Empty: the caller's.
  std::string cgroup_namespace;
};

struct Output {
  int exit_code = -1;  // 128+signal when killed by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// A running child. Destroying the handle stops the child (SIGTERM, then
// SIGKILL after the grace period) and reaps it.
class Subprocess {
 public:
  static Result<Subprocess> spawn(const SpawnOptions& options);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig` to the child (its whole group when it has one).
  Status signal(int sig);
  // Waits up to `timeout` for the child to exit; returns its exit status as
  // from waitpid (use exit_code()), or DeadlineExceeded.
  Result<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  friend Result<Output> run(const std::vector<std::string>&, std::chrono::milliseconds,
                            const std::string&);
  explicit Subprocess(pid_t pid, bool group) : pid_(pid), group_(group) {}
  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> exit_status_;
};

// Runs a command to completion, capturing stdout and stderr. A command that
// outlives `timeout` is killed and DeadlineExceeded is returned. A non-zero
// exit is not an error here: callers decide what an exit code means.
Result<Output> run(const std::vector<std::string>& argv,
                   std::chrono::milliseconds timeout = std::chrono::seconds(60),
                   const std::string& stdin_data = {});

// Decodes a waitpid status: the exit code, or 128+signal.
int exit_code(int wait_status);

// The NULL-terminated pointers exec*() takes, into `v` (valid while `v`
// lives and is not resized): for a caller that execs itself.
std::vector<char*> c_strings(std::vector<std::string>& v);

}  // namespace ferry::process
