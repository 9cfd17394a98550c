// Where ferry-runc gets a restore from: the snapshot store on shared
// storage. Verifies the snapshot (binding to this pod, checksums of every
// file) and applies its rootfs diff to the new container's rootfs.
#pragma once

#include "runtime/wrapper.h"

namespace ferry::runtime {

Result<PreparedRestore> prepare_from_store(const WrapperConfig& config,
                                           const RestoreRequest& request);

}  // namespace ferry::runtime
