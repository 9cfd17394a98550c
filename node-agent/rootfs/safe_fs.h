// File-descriptor based filesystem primitives for the rootfs diff. Both sides
// of the diff touch trees that a container controls: capture walks an upper
// dir that the container wrote, apply writes into a rootfs that the diff
// describes. A path string resolved by the kernel would follow whatever
// symlinks those trees contain, so every step here goes one component at a
// time from a directory fd with O_NOFOLLOW, and nothing ever leaves the tree
// it started in. Internal to ferry_rootfs.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "posix/unique_fd.h"
#include "status/status.h"

namespace ferry::rootfs::internal {

using UniqueFd = posix::UniqueFd;

// A Status for a failed system call: ENOSPC/EDQUOT become ResourceExhausted,
// ENOENT NotFound, EACCES/EPERM PermissionDenied, the rest Internal.
Status errno_status(int err, const std::string& what);

// Splits a relative path into its components, or explains why the path is
// unsafe: absolute, empty components, "." or "..", NUL bytes.
Result<std::vector<std::string>> split_relative_path(std::string_view path);

// Opens `path` (absolute or relative to the cwd) as a directory without
// following a symlink in its last component.
Result<UniqueFd> open_dir(const std::string& path);

// Walks `components` (all of them) from `dirfd`, refusing any component that
// is not a real directory. `display` names the whole path in errors.
Result<UniqueFd> open_dir_beneath(int dirfd, const std::vector<std::string>& components,
                                  std::string_view display);

// Removes `name` in `dirfd` and, when it is a directory, everything below it,
// without following symlinks. A missing `name` is not an error.
Status remove_tree_at(int dirfd, const std::string& name);

// Removes everything inside the directory `dirfd`, keeping the directory.
Status remove_children(int dirfd);

// Copies all of `in` to `out`: copy_file_range first (a reflink or an
// in-kernel copy), read/write where the filesystems do not support it.
Result<std::uint64_t> copy_fd(int in, int out, const std::string& what);

// Sorted names in the directory `dirfd` (without "." and "..").
Result<std::vector<std::string>> list_dir(int dirfd);

}  // namespace ferry::rootfs::internal
