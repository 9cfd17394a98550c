// The container's writable layer, carried to another node. A restored
// process expects the files it created, changed and deleted to be there (a
// pid file, a half-written log, a removed lock file), but the target node
// starts from a fresh rootfs of the same image. So the source captures the
// overlayfs upper dir into a plain diff directory (content, metadata, and the
// deletions that overlay keeps as whiteouts and opaque directories, written
// down explicitly in index.json rather than as device nodes), and the target
// applies it onto the new rootfs. Applying treats the diff as untrusted: it
// never resolves a path through a symlink, so a crafted diff cannot write
// outside the rootfs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::rootfs {

// Inside a diff directory: the index, and one content file per regular file.
inline constexpr char kIndexFile[] = "index.json";
inline constexpr char kDataDir[] = "data";
inline constexpr int kDiffFormatVersion = 1;

enum class EntryType {
  kDirectory,
  kFile,
  kSymlink,
  kHardlink,  // another name for an earlier kFile entry of this diff
  kWhiteout,  // the path was deleted: remove it (recursively) from the rootfs
  kFifo,
  kCharDevice,
  kBlockDevice,
};

struct DiffEntry {
  std::string path;  // relative to the rootfs root, no '.', '..' or empty components
  EntryType type = EntryType::kFile;
  std::uint32_t mode = 0;  // permission bits only (07777)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime_sec = 0;
  std::int64_t mtime_nsec = 0;
  // kDirectory: everything the image had below it is hidden (overlay
  // "opaque" directory): the target directory is emptied first.
  bool opaque = false;
  std::string data;            // kFile: content file, relative to the diff dir
  std::uint64_t size = 0;      // kFile
  std::string symlink_target;  // kSymlink: stored verbatim, resolved by the container
  std::string link_to;         // kHardlink: path of an earlier kFile entry
  std::uint64_t rdev = 0;      // kCharDevice, kBlockDevice
  // Extended attributes other than overlayfs' own (e.g. security.capability).
  std::map<std::string, std::string> xattrs;
};

// index.json: entries in pre-order (every directory before what is inside it).
struct DiffIndex {
  int format_version = kDiffFormatVersion;
  std::vector<DiffEntry> entries;
};

struct DiffStats {
  std::uint64_t files = 0;  // regular files, counting hard links once
  std::uint64_t dirs = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t hardlinks = 0;
  std::uint64_t deletions = 0;    // whiteouts
  std::uint64_t opaque_dirs = 0;  // also counted in dirs
  std::uint64_t special = 0;      // fifos and device nodes
  std::uint64_t skipped = 0;      // sockets: meaningless without their process
  std::uint64_t bytes = 0;        // content bytes of regular files
};

// Copies the overlayfs upper dir `upper_dir` into `out_dir`, which is created
// (mode 0700) and must not exist or be empty. The container must be frozen:
// capture does not follow symlinks, but a tree changing underneath gives an
// inconsistent diff. Unsupported for overlay features that leave data in the
// lower layers (redirect_dir renames, metacopy files).
Result<DiffStats> capture_upper_dir(const std::string& upper_dir, const std::string& out_dir);

// Applies the diff in `diff_dir` onto `rootfs` (a fresh rootfs of the same
// image, e.g. the merged overlay mount of the new container). The whole index
// is validated before anything is written; an unsafe diff (a '..' or absolute
// path, a path below a symlink, a hard link to outside the diff) is refused
// with InvalidArgument or PermissionDenied, reason "UnsafeRootfsDiff".
Result<DiffStats> apply_diff(const std::string& diff_dir, const std::string& rootfs);

// index.json codec. Decoding rejects unknown format versions (Unsupported)
// and tolerates unknown fields; it does not judge paths (validate_index does).
std::string index_to_json(const DiffIndex& index);
Result<DiffIndex> index_from_json(const std::string& text);
// The static safety checks apply_diff runs before touching the rootfs.
Status validate_index(const DiffIndex& index);

}  // namespace ferry::rootfs
