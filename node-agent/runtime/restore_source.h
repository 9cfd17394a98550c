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

Result<PreparedRestore> prepare_from_store(const WrapperConfig& config,
                                           const RestoreRequest& request);

}  // namespace ferry::runtime
