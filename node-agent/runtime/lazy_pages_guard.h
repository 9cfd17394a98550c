// The guard of a PostCopy restore's `criu lazy-pages` daemon.
//
// When the daemon stops before every page arrived (the source's page server
// died, the network between the nodes failed), the kernel unregisters its
// userfaultfd ranges (fs/userfaultfd.c, userfaultfd_release), and the
// restored tasks' later faults on pages that never came are served as
// fresh zero-filled pages: the container would run on with wrong memory
// (seen: a restored process segfaulting at ip 0; bench/results/engine.md,
// PostCopy). The guard runs the daemon and watches it to its end; when it
// fails, the guard SIGKILLs the restored container's init (from the pid
// file runc writes for the shim), so the container stops loudly, as a
// failed restore, instead of running on zeros.
//
// ferry-runc `create` starts the guard as itself with kLazyPagesGuardEnv
// set; the guard detaches (its own session) and outlives ferry-runc, as
// CRIU's `--daemon` does.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::runtime {

// Set (to the guard's JSON description) in the environment of a ferry-runc
// started as a guard.
inline constexpr const char* kLazyPagesGuardEnv = "FERRY_LAZY_PAGES_GUARD";

struct LazyPagesGuard {
  std::vector<std::string> criu_argv;  // lazy_pages_argv(): `criu lazy-pages ... --daemon`
  std::string work_dir;                // where CRIU's socket and the guard's files go
  std::string pid_file;                // runc's --pid-file: the restored container's init
  // How long to wait for the pid file after the daemon failed (the restore
  // may still be running; a restore that fails writes none).
  std::chrono::milliseconds pid_file_wait = std::chrono::seconds(60);
};

// Files the guard writes in work_dir.
inline constexpr const char* kLazyPagesStartedFile = "lazy-pages.started";  // the start's exit code
inline constexpr const char* kLazyPagesFailedFile = "lazy-pages.failed";    // why it killed

std::string encode_guard(const LazyPagesGuard& guard);
Result<LazyPagesGuard> decode_guard(const std::string& json);

// The guard's work, in the process that is to watch the daemon (it makes
// itself the subreaper of what it starts, so the daemon CRIU detaches is
// still its child): starts the daemon, writes kLazyPagesStartedFile with the
// start's exit code (0: it listens), then waits for the daemon. A daemon
// that ends with an error or a signal gets the container's init killed and
// kLazyPagesFailedFile written. Returns 0 when the daemon succeeded.
int run_lazy_pages_guard(const LazyPagesGuard& guard);

}  // namespace ferry::runtime
