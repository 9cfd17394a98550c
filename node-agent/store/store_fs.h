// POSIX helpers shared by the store's files: fd ownership, errno mapping,
// durable writes. Internal to ferry_store.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "posix/unique_fd.h"
#include "status/status.h"

namespace ferry::store::internal {

using UniqueFd = posix::UniqueFd;

// ENOSPC/EDQUOT: ResourceExhausted (reason SnapshotStoreFull); ENOENT:
// NotFound; EACCES/EPERM: PermissionDenied; otherwise Internal.
Status errno_status(int err, const std::string& what);

// Writes all of `data`, retrying short writes.
Status write_all(int fd, std::string_view data, const std::string& what);

// fsync of a directory, so the names in it survive a crash.
Status fsync_dir(const std::string& path);

// Removes `path` and everything below it, never following symlinks.
// Missing is fine.
Status remove_tree(const std::string& path);

// 32 random hex characters, for names that concurrent writers never share.
std::string random_name();

}  // namespace ferry::store::internal
