// Where ferry-runc gets a restore from: the snapshot store on shared
// storage. Verifies the snapshot (binding to this pod, checksums of every
// file but CRIU's memory images, which the CRIU proxy verifies while CRIU
// reads them: criu_proxy.h) and applies its rootfs diff to the new
// container's rootfs.
#pragma once

#include "runtime/wrapper.h"

namespace ferry::runtime {

// Inside a snapshot directory: the captured writable layer (rootfs/diff.h).
inline constexpr std::string_view kRootfsDiffDir = "rootfs-diff";
// Inside a snapshot directory: how the source dumped ({"tcpEstablished": bool,
// "lazyPages": bool, "pageServer": "address:port"}), written by the agent
// with the images.
inline constexpr std::string_view kRestoreOptionsFile = "restore-options.json";
// The source container's CRI log, carried so `kubectl logs` of the restored
// container starts with what it printed before the move. Written into the
// new container's log file (which containerd opened, empty, in append mode
// before calling create) ahead of anything the restored process prints.
inline constexpr std::string_view kCarriedLogFile = "container.log";

Result<PreparedRestore> prepare_from_store(const WrapperConfig& config,
                                           const RestoreRequest& request);

// CRIU's memory images (pages-<n>.img): the bulk of a snapshot, read by
// CRIU alone.
bool is_criu_memory_image(const std::string& rel_path);

}  // namespace ferry::runtime
