// The source side of a migration, step by step (DESIGN.md §3): freeze the
// container (cgroup freezer, through the runtime), dump it with CRIU while it
// stays frozen (`runc checkpoint --leave-running` on the paused container),
// and afterwards either thaw it (rollback) or kill it while frozen (success:
// SIGKILL every task, then thaw, so no user code runs again). The source is
// never killed by a checkpoint, and a failed checkpoint leaves it exactly as
// it was (frozen if we froze it). Timings are measured here because the
// freeze window is the number users feel.
//
// PostCopy (dump_lazy) differs only in what is dumped and when the dump
// ends: CRIU writes every image but memory, signals on a status pipe that
// it serves pages, and runs on as a page server until the target's
// `criu lazy-pages` has pulled every page; the small images are published
// at once so the target restores while memory is still in flight.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "checkpoint/network_lock.h"
#include "checkpoint/oci_runtime.h"
#include "status/status.h"
#include "store/snapshot_store.h"

namespace ferry::checkpoint {

struct DumpRequest {
  std::string container_id;
  std::string image_dir;  // where CRIU writes (a store staging directory)
  std::string work_dir;   // CRIU logs
  TcpMode tcp = TcpMode::kClose;
  // CRIU's network lock method for the dump ("nftables"; empty: CRIU's
  // default, iptables). The restore uses the one the dump recorded. It goes
  // through the container's CRIU config file: a container not created
  // through ferry-runc is refused (NotOnFerryRuntime) rather than dumped
  // with another lock.
  std::string network_lock;
};

struct DumpResult {
  std::chrono::duration<double> freeze{};  // pause call
  std::chrono::duration<double> dump{};    // runc checkpoint
  uint64_t image_bytes = 0;
};

struct LazyDumpRequest {
  std::string container_id;
  // Local directory (created if missing) for the images CRIU writes and its
  // logs (dump.log); it must outlive the page transfer.
  std::string work_dir;
  std::string page_server;  // "address:port" where the source's CRIU serves pages
  TcpMode tcp = TcpMode::kClose;
  // CRIU's network lock method for the dump ("nftables"; empty: CRIU's
  // default, iptables). The restore uses the one the dump recorded. It goes
  // through the container's CRIU config file: a container not created
  // through ferry-runc is refused (NotOnFerryRuntime) rather than dumped
  // with another lock.
  std::string network_lock;
  // Called while frozen, after the images are in the writer and before it
  // publishes: adds what else the snapshot carries (the rootfs diff).
  std::function<Status(store::SnapshotWriter&)> before_publish;
  // How long CRIU may take to dump everything but memory.
  std::chrono::milliseconds ready_timeout = std::chrono::minutes(2);
  // CRIU reads each page from the frozen tasks when the target asks for it
  // (`lazy-dump-mode read`, our CRIU patch
  // hack/toolchain/criu-patches/4.2.1/0002-lazy-dump-read-mode.patch)
  // instead of splicing every page into pipes while the tasks are frozen:
  // the freeze no longer grows with memory, and no pipe-size sysctl is
  // raised. Set it where CriuFeatures::lazy_dump_read. It goes through the
  // container's CRIU config file, so a container not created through
  // ferry-runc is dumped the old way (LazyDumpResult says which ran).
  bool read_pages_on_request = false;
  // The pages travel over mutual TLS, with credentials minted for this dump
  // (page_transfer_tls.h): the page server's in work_dir/tls, the
  // target's in the snapshot, and restore-options.json says so. This goes
  // through the container's CRIU config file too, so a container not
  // created through ferry-runc is refused (NotOnFerryRuntime): its memory is
  // never served in clear text. Off only in tests of something else.
  bool encrypt_transfer = true;
  // See kCriuLazyPipeBytes (tests point this elsewhere).
  std::string pipe_max_size_sysctl = "/proc/sys/fs/pipe-max-size";
};

struct LazyDumpResult {
  // When the pause call began: the application's downtime runs from here
  // (what comes before it, the runtime's state and CRIU's config, does not
  // stop the application).
  std::chrono::steady_clock::time_point frozen_at{};
  std::chrono::duration<double> freeze{};   // pause call
  std::chrono::duration<double> dump{};     // until CRIU serves pages
  std::chrono::duration<double> publish{};  // copy into the store and publish
  uint64_t image_bytes = 0;                 // the published (non-memory) images
  bool pages_read_on_request = false;       // LazyDumpRequest::read_pages_on_request took
  bool encrypted = false;                   // LazyDumpRequest::encrypt_transfer took
  // The page server. Keep it until the restored container has every page
  // (transfer->wait()); destroying it earlier stops the transfer. Meanwhile
  // CRIU holds the source's tasks stopped with ptrace, and their cgroup is
  // frozen as well (dump_lazy froze it again after CRIU had thawed it), so
  // they stay frozen if CRIU dies.
  // A transfer that fails after the target restored would leave the target
  // running without its missing pages (the kernel serves them as zeros once
  // the target's `criu lazy-pages` exits); ferry-runc's guard kills the
  // restored container then (runtime/lazy_pages_guard.h), and the source,
  // still frozen, can be thawed. (In read mode the source's tasks must also
  // live until the transfer ends: their memory is the pages.)
  std::unique_ptr<RunningCheckpoint> transfer;
};

// In CRIU's splice mode (stock CRIU), its lazy page server tee()s pages
// through a pipe it sizes to PIPE_MAX_SIZE pages (819 on x86-64, rounded up
// by the kernel to 1024: 4 MiB) and does not check whether that worked
// (criu/page-pipe.c, pipe_read_dest_init; criu/page-xfer.c ignores its
// return). Without CAP_SYS_RESOURCE the resize fails with EPERM when
// fs.pipe-max-size is lower (the default is 1 MiB), the sink fd stays -1,
// and the transfer dies with "page-pipe: splice: -1: Bad file descriptor".
inline constexpr uint64_t kCriuLazyPipeBytes = 4u << 20;
// Raises the sysctl at `path` to `bytes` when it is lower (never lowers it);
// returns a line saying what changed, or "" when nothing did.
Result<std::string> ensure_pipe_max_size(uint64_t bytes,
                                         const std::string& path = "/proc/sys/fs/pipe-max-size");

// Removes a network lock a killed CRIU left in the network namespace of
// process `pid`; returns what it removed (network_lock.h).
using NetworkLockReleaser = std::function<Result<std::string>(int pid)>;

class CheckpointEngine {
 public:
  explicit CheckpointEngine(OciRuntime& runtime,
                            NetworkLockReleaser release_network_lock = release_criu_network_lock)
      : runtime_(runtime), release_network_lock_(std::move(release_network_lock)) {}

  // Pauses the container; already paused is fine.
  Result<std::chrono::duration<double>> freeze(const std::string& id);
  // Freezes (if needed) and dumps; the container stays frozen either way.
  Result<DumpResult> dump(const DumpRequest& request);
  // PostCopy: freezes (if needed), dumps everything but memory into
  // request.work_dir, copies those images with restore-options.json into
  // `writer` and publishes it; returns with the page server running. The
  // container stays frozen either way (its cgroup frozen again before the
  // publish); on failure nothing is published and no runc or CRIU process
  // is left.
  Result<LazyDumpResult> dump_lazy(const LazyDumpRequest& request, store::SnapshotWriter& writer);
  // Rollback: the frozen source runs again, reachable: a network lock left
  // by a CRIU that died mid-dump is removed first.
  Status thaw(const std::string& id);
  // Success: no task of the frozen source ever runs user code again (a
  // container already stopped is a success too; a running one is refused).
  Status kill_frozen(const std::string& id,
                     std::chrono::seconds timeout = std::chrono::seconds(30));

 private:
  // freeze() of a container whose state was just read (one runtime call less).
  Result<std::chrono::duration<double>> freeze(const ContainerState& state);
  // `extra`: more lines for the file (only where it exists).
  Status write_criu_config(const ContainerState& state, TcpMode tcp,
                           const std::string& network_lock, const std::string& extra = "");
  OciRuntime& runtime_;
  NetworkLockReleaser release_network_lock_;
};

uint64_t directory_bytes(const std::string& dir);

}  // namespace ferry::checkpoint
