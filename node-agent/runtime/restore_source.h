// Where ferry-runc gets a restore from: the snapshot store on shared
// storage. Verifies the snapshot (binding to this pod, checksums of every
// file) and applies its rootfs diff to the new container's rootfs.
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

}  // namespace ferry::runtime
