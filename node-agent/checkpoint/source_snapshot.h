// One whole source-side Cold checkpoint of a container, as the agent does it
// for a Migration: find the container's writable layer (the overlayfs
// upperdir under its bundle's rootfs), freeze and dump it into a snapshot
// store writer, capture the writable layer, record how to restore, and
// publish. The container is left frozen whatever happens; the caller thaws
// (rollback) or kills it frozen (success).
#pragma once

#include <string>

#include "checkpoint/engine.h"
#include "status/status.h"
#include "store/snapshot_store.h"

namespace ferry::checkpoint {

struct SourceSnapshotRequest {
  std::string container_id;
  std::string snapshot_root;  // shared storage
  store::Binding binding;     // the pod the snapshot may be restored into
  TcpMode tcp = TcpMode::kClose;
  std::string network_lock;  // DumpRequest::network_lock
  std::string work_dir;      // CRIU logs (node-local)
  std::string criu_version;
  std::string runtime_version;
  // What the snapshot's files are listed with (the agent's --snapshot-digest).
  store::DigestAlgorithm digest_algorithm = store::kDefaultDigestAlgorithm;
  // The container's CRI log file (kubelet's /var/log/pods/...), carried as
  // container.log so `kubectl logs` of the restored container shows what it
  // printed before the move. Empty or missing: nothing carried.
  std::string log_file;
};

struct SourceSnapshotResult {
  DumpResult dump;
  std::string snapshot_dir;
  uint64_t bytes = 0;
  std::chrono::duration<double> publish{};
};

Result<SourceSnapshotResult> snapshot_container(OciRuntime& runtime,
                                                const SourceSnapshotRequest& request);

// PostCopy: the same snapshot without the container's memory, which CRIU
// serves from `page_server` ("address:port" on this node) until the
// restored copy has pulled every page (CheckpointEngine::dump_lazy). The
// result's dump.transfer is that page server: keep it until then.
struct LazySourceSnapshotResult {
  LazyDumpResult dump;
  std::string snapshot_dir;
  uint64_t bytes = 0;  // published (everything but memory)
};
Result<LazySourceSnapshotResult> snapshot_container_lazy(OciRuntime& runtime,
                                                         const SourceSnapshotRequest& request,
                                                         const std::string& page_server,
                                                         bool read_pages_on_request);

// The overlayfs upperdir of the filesystem mounted at `mount_point`, from
// /proc/self/mountinfo (`mountinfo` for tests). NotFound when it is not an
// overlay mount.
Result<std::string> overlay_upper_dir(const std::string& mount_point,
                                      const std::string& mountinfo = "/proc/self/mountinfo");

}  // namespace ferry::checkpoint
