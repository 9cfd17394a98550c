// The logic of ferry-runc, the OCI runtime wrapper behind the `ferry`
// RuntimeClass (DESIGN.md §2). Every runtime call passes through to the real
// runtime unchanged (by exec, so fds, stdio and exit codes are the
// runtime's own), with two exceptions:
//   - `create` of a container whose spec carries ferry.dev/restore-from
//     becomes a CRIU restore (`runc restore --detach`) into the new bundle,
//     after the snapshot is verified against this pod and the rootfs diff is
//     applied; the following `start` then succeeds without doing anything,
//     because the restored process is already running;
//   - every `create` gets a per-container CRIU configuration file
//     (org.criu.config annotation), through which the agent chooses
//     checkpoint options runc has no flags for (tcp-close);
//   - the snapshot's memory images are verified while CRIU restores them,
//     by the CRIU proxy runc runs as `criu` (criu_proxy.h): no restored
//     task runs before they match, and the restore costs one read of them;
//   - a PostCopy snapshot (no memory in it) is restored with
//     `runc restore --lazy-pages`, after a `criu lazy-pages` daemon was
//     started in the restore's work directory: it outlives ferry-runc,
//     fetches the pages from the source's page server as the restored
//     process touches them (and the rest in the background), and exits when
//     it has them all; `delete` stops one that is still there.
// A refused restore exits non-zero with one clear line in the runtime log
// the shim reads, and nothing is left running.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/runc_args.h"
#include "status/status.h"

namespace ferry::store {
class LateStart;  // store/hashing.h
}  // namespace ferry::store

namespace ferry::runtime {

struct WrapperConfig {
  std::string runtime = "runc";  // the real runtime: path or name in PATH
  std::string snapshot_root = "/var/lib/ferry/snapshots";
  std::string state_dir = "/run/ferry";        // markers, CRIU configs, restore logs
  std::string criu = "criu";                   // for `criu lazy-pages` (runc finds its own)
  std::string pod_log_root = "/var/log/pods";  // kubelet's <ns>_<pod>_<uid>/<container>/N.log
  // How long `create` of a container to restore waits for its snapshot to
  // be published (the replacement pod is created while the source is still
  // dumping). 0: refuse at once. Waiting, rather than failing, keeps
  // kubelet from counting a failed start and backing off (10 s and more)
  // before its next try; kubelet's own CRI deadline is 2 min. The wait ends
  // early when the source agent abandons the migration (abandoned_marker).
  int snapshot_wait_seconds = 0;
  // ferry-runc's own binary, which the CRIU proxy's `criu` links to; empty:
  // /proc/self/exe.
  std::string self_exe;
  // Loads $FERRY_RUNC_CONFIG, else /etc/ferry/ferry-runc.json, else defaults.
  static Result<WrapperConfig> load();
};

// Who is being restored, from the new container's OCI annotations.
struct RestoreRequest {
  std::string migration_uid;
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;
  std::string container_name;
  std::string rootfs;  // absolute path of the new bundle's rootfs
};

struct PreparedRestore {
  std::string image_dir;  // verified CRIU images, but for `unverified`
  // Images whose checksums are still to be verified, by the CRIU proxy
  // during the restore (criu_proxy.h); relative to image_dir.
  std::vector<std::string> unverified;
  // Verifies `unverified`: beside CRIU, with one more worker that waits at
  // `criu_waits` for CRIU to wait for the verdict (criu_waiting.h); or, with
  // nullptr, by ferry-runc itself before the restore when the proxy cannot
  // be set up.
  std::function<Status(store::LateStart* criu_waits)> verify_unverified;
  bool tcp_established = false;  // how the snapshot's TCP connections were dumped
  bool lazy_pages = false;
  std::string page_server;  // PostCopy: "address:port" of the source's page server
  // PostCopy over mutual TLS: the snapshot (image_dir) carries this
  // migration's CA and the client certificate and key
  // (checkpoint/page_transfer_tls.h).
  bool page_transfer_tls = false;
  // Keeps the snapshot locked against retention until the restore is done:
  // the owner lives until exec, and `inherit_fd` (if >= 0) is kept open
  // across the exec so the lock is held by runc restore itself.
  std::shared_ptr<void> hold;
  int inherit_fd = -1;
};

// Verifies the snapshot for `request` (binding, checksums) and applies its
// rootfs diff; returns where the images are. Injected for tests.
using RestorePreparer =
    std::function<Result<PreparedRestore>(const WrapperConfig&, const RestoreRequest&)>;

// The argv of the `criu lazy-pages` daemon for a PostCopy restore whose
// images are in `image_dir`, listening in `work_dir` (where `runc restore
// --work-path` makes CRIU look for lazy-pages.socket) and fetching from
// `page_server` ("address:port"; IPv6 as "[addr]:port"); with `tls`, over
// mutual TLS with the credentials the snapshot in `image_dir` carries.
Result<std::vector<std::string>> lazy_pages_argv(const std::string& criu,
                                                 const std::string& image_dir,
                                                 const std::string& work_dir,
                                                 const std::string& page_server, bool tls);

// Starts the daemon `argv` (lazy_pages_argv) under its guard
// (lazy_pages_guard.h: the container whose init runc writes to `pid_file`
// is killed if the daemon fails) and returns once it listens on
// `work_dir`/lazy-pages.socket. Injected for tests.
using LazyPagesStarter =
    std::function<Status(const std::vector<std::string>& argv, const std::string& work_dir,
                         const std::string& pid_file)>;
Status start_lazy_pages_daemon(const std::vector<std::string>& argv, const std::string& work_dir,
                               const std::string& pid_file);

// The marker the source agent writes when a migration rolls back, so a
// restore waiting for its snapshot stops waiting: <root>/<uid>.abandoned.
std::string abandoned_marker(const std::string& snapshot_root, const std::string& migration_uid);

// What main() should do: exec `argv`, or exit with `exit_code` at once.
struct Action {
  std::vector<std::string> exec_argv;
  int exit_code = 0;
  std::shared_ptr<void> hold;  // see PreparedRestore
  int inherit_fd = -1;
  // A restore through the CRIU proxy: runc gets `env` on top of ours, and
  // runs as a child rather than by exec, so that when it fails the proxy's
  // reason (written to `failure_reason_file`) is reported after runc's own
  // error: the shim shows the last error line of the runtime log.
  std::vector<std::pair<std::string, std::string>> env;
  std::string failure_reason_file;
  std::string failure_context;  // put before the reason
  RuncArgs report_args;
  // The memory images' verification, which ferry-runc runs on a thread of
  // its own while runc restores, writing its verdict to `verdict_file` for
  // the proxy (criu_proxy.h, write_verdict). Empty: none. The proxy says
  // through `criu_waiting_fifo` when CRIU waits for it (criu_waiting.h).
  std::function<Status(store::LateStart* criu_waits)> verify;
  std::string verdict_file;
  std::string criu_waiting_fifo;
};

// The directory whose `criu` is the proxy, the file the proxy writes a
// failed verification to, and the verification's verdict file, for
// container `id`.
std::string criu_proxy_dir(const WrapperConfig& config);
std::string criu_proxy_error_file(const WrapperConfig& config, const std::string& id);
std::string criu_proxy_verdict_file(const WrapperConfig& config, const std::string& id);
std::string criu_proxy_waiting_fifo(const WrapperConfig& config, const std::string& id);

// Decides, performing the side effects a decision needs (markers, CRIU
// config files, spec annotations, snapshot preparation).
Action plan(const WrapperConfig& config, const std::vector<std::string>& args,
            const RestorePreparer& prepare,
            const LazyPagesStarter& start_lazy_pages = start_lazy_pages_daemon);

// Writes one error line in the runtime log format the shim expects
// (--log FILE, --log-format json|text) and to stderr.
void report_error(const RuncArgs& args, const std::string& message);

}  // namespace ferry::runtime
