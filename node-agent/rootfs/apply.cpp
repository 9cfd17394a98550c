#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "rootfs/diff.h"
#include "rootfs/safe_fs.h"

namespace ferry::rootfs {
namespace {

using internal::errno_status;
using internal::UniqueFd;

Result<std::string> read_index(int diff_fd, const std::string& diff_dir) {
  UniqueFd fd(::openat(diff_fd, kIndexFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "open " + diff_dir + "/" + kIndexFile);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "read " + diff_dir + "/" + kIndexFile);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
  }
}

struct timespec_pair {
  struct timespec times[2];
};

timespec_pair times_of(const DiffEntry& e) {
  timespec_pair t{};
  t.times[0].tv_nsec = UTIME_OMIT;  // atime: not carried
  t.times[1].tv_sec = static_cast<time_t>(e.mtime_sec);
  t.times[1].tv_nsec = static_cast<long>(e.mtime_nsec);
  return t;
}

// A path of the rootfs opened for change: its parent directory, reached
// without following symlinks, and the name inside it.
struct Location {
  UniqueFd parent;
  std::string leaf;
};

class Applier {
 public:
  Applier(int diff_fd, int root_fd) : diff_fd_(diff_fd), root_fd_(root_fd) {}

  Status apply(const DiffEntry& e) {
    auto loc = locate(root_fd_, e.path);
    if (!loc.ok()) return loc.status();
    switch (e.type) {
      case EntryType::kWhiteout:
        ++stats.deletions;
        return internal::remove_tree_at(loc->parent.get(), loc->leaf);
      case EntryType::kDirectory:
        return apply_dir(e, *loc);
      case EntryType::kFile:
        return apply_file(e, *loc);
      case EntryType::kSymlink:
        return apply_symlink(e, *loc);
      case EntryType::kHardlink:
        return apply_hardlink(e, *loc);
      case EntryType::kFifo:
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
        return apply_node(e, *loc);
    }
    return internal_error("unknown entry type");
  }

  // Directory mtimes last: creating their children changed them.
  Status finish_dirs(const DiffIndex& index) {
    for (auto it = index.entries.rbegin(); it != index.entries.rend(); ++it) {
      if (it->type != EntryType::kDirectory) continue;
      auto parts = internal::split_relative_path(it->path);
      if (!parts.ok()) return parts.status();
      auto dir = internal::open_dir_beneath(root_fd_, *parts, it->path);
      if (!dir.ok()) return dir.status();
      auto t = times_of(*it);
      if (::futimens(dir->get(), t.times) != 0) {
        return errno_status(errno, "set mtime of '" + it->path + "'");
      }
    }
    return {};
  }

  DiffStats stats;

 private:
  static Result<Location> locate(int base_fd, const std::string& path) {
    auto parts = internal::split_relative_path(path);
    if (!parts.ok()) return parts.status();
    Location loc;
    loc.leaf = parts->back();
    parts->pop_back();
    auto parent = internal::open_dir_beneath(base_fd, *parts, path);
    if (!parent.ok()) return parent.status();
    loc.parent = std::move(*parent);
    return loc;
  }

  // Makes room for a non-directory: whatever is at the path goes, a
  // directory with everything below it (overlay hides a lower directory
  // entirely when the upper has a file of the same name).
  static Status clear(const Location& loc) {
    return internal::remove_tree_at(loc.parent.get(), loc.leaf);
  }

  static Status set_xattrs(int fd, const DiffEntry& e) {
    for (const auto& [name, value] : e.xattrs) {
      if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) {
        if (errno == ENOTSUP) continue;  // the target filesystem cannot hold it
        return errno_status(errno, "set xattr " + name + " on '" + e.path + "'");
      }
    }
    return {};
  }

  // Owner before mode: chown clears setuid/setgid bits.
  static Status set_owner_mode(int fd, const DiffEntry& e) {
    if (::fchown(fd, e.uid, e.gid) != 0) return errno_status(errno, "chown '" + e.path + "'");
    if (::fchmod(fd, e.mode) != 0) return errno_status(errno, "chmod '" + e.path + "'");
    return set_xattrs(fd, e);
  }

  Status apply_dir(const DiffEntry& e, const Location& loc) {
    struct stat st {};
    bool exists = ::fstatat(loc.parent.get(), loc.leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && !S_ISDIR(st.st_mode)) {
      FERRY_RETURN_IF_ERROR(clear(loc));
      exists = false;
    }
    if (!exists && ::mkdirat(loc.parent.get(), loc.leaf.c_str(), 0700) != 0) {
      return errno_status(errno, "mkdir '" + e.path + "'");
    }
    UniqueFd dir(::openat(loc.parent.get(), loc.leaf.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir.valid()) return errno_status(errno, "open '" + e.path + "'");
    if (e.opaque) {
      FERRY_RETURN_IF_ERROR(
          internal::remove_children(dir.get()).with_context("empty opaque '" + e.path + "'"));
      ++stats.opaque_dirs;
    }
    ++stats.dirs;
    return set_owner_mode(dir.get(), e);
  }

  Status apply_file(const DiffEntry& e, const Location& loc) {
    auto src_loc = locate(diff_fd_, e.data);
    if (!src_loc.ok()) return src_loc.status().with_context("content of '" + e.path + "'");
    UniqueFd src(::openat(src_loc->parent.get(), src_loc->leaf.c_str(),
                          O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
    if (!src.valid()) {
      if (errno == ELOOP) {
        return Status(Code::kInvalidArgument,
                      "diff content " + e.data + " for '" + e.path +
                          "' is a symlink; refusing to copy what it points to",
                      "UnsafeRootfsDiff");
      }
      return errno_status(errno, "open diff content " + e.data);
    }
    struct stat sst {};
    if (::fstat(src.get(), &sst) != 0 || !S_ISREG(sst.st_mode)) {
      return Status(Code::kInvalidArgument,
                    "diff content " + e.data + " for '" + e.path + "' is not a regular file",
                    "UnsafeRootfsDiff");
    }
    FERRY_RETURN_IF_ERROR(clear(loc));
    UniqueFd dst(::openat(loc.parent.get(), loc.leaf.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!dst.valid()) return errno_status(errno, "create '" + e.path + "'");
    auto copied = internal::copy_fd(src.get(), dst.get(), e.path);
    if (!copied.ok()) return copied.status();
    if (*copied != e.size) {
      return Status(Code::kDataLoss, "diff content " + e.data + " for '" + e.path + "' has " +
                                         std::to_string(*copied) + " bytes, index says " +
                                         std::to_string(e.size));
    }
    FERRY_RETURN_IF_ERROR(set_owner_mode(dst.get(), e));
    auto t = times_of(e);
    if (::futimens(dst.get(), t.times) != 0) {
      return errno_status(errno, "set mtime of '" + e.path + "'");
    }
    ++stats.files;
    stats.bytes += *copied;
    return {};
  }

  // The target string is not resolved here: the container resolves it
  // against its own root, where an absolute target is legitimate.
  Status apply_symlink(const DiffEntry& e, const Location& loc) {
    FERRY_RETURN_IF_ERROR(clear(loc));
    if (::symlinkat(e.symlink_target.c_str(), loc.parent.get(), loc.leaf.c_str()) != 0) {
      return errno_status(errno, "symlink '" + e.path + "'");
    }
    ++stats.symlinks;
    return set_link_meta(e, loc);
  }

  static Status set_link_meta(const DiffEntry& e, const Location& loc) {
    if (::fchownat(loc.parent.get(), loc.leaf.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_status(errno, "chown '" + e.path + "'");
    }
    auto t = times_of(e);
    if (::utimensat(loc.parent.get(), loc.leaf.c_str(), t.times, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_status(errno, "set mtime of '" + e.path + "'");
    }
    return {};
  }

  Status apply_hardlink(const DiffEntry& e, const Location& loc) {
    auto src = locate(root_fd_, e.link_to);
    if (!src.ok()) return src.status();
    struct stat st {};
    if (::fstatat(src->parent.get(), src->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      return Status(Code::kInvalidArgument,
                    "hard link '" + e.path + "': '" + e.link_to + "' is not a regular file",
                    "UnsafeRootfsDiff");
    }
    FERRY_RETURN_IF_ERROR(clear(loc));
    if (::linkat(src->parent.get(), src->leaf.c_str(), loc.parent.get(), loc.leaf.c_str(), 0) !=
        0) {
      return errno_status(errno, "link '" + e.path + "' to '" + e.link_to + "'");
    }
    ++stats.hardlinks;
    return {};
  }

  Status apply_node(const DiffEntry& e, const Location& loc) {
    FERRY_RETURN_IF_ERROR(clear(loc));
    mode_t type = e.type == EntryType::kFifo         ? S_IFIFO
                  : e.type == EntryType::kCharDevice ? S_IFCHR
                                                     : S_IFBLK;
    if (::mknodat(loc.parent.get(), loc.leaf.c_str(), type | 0600, static_cast<dev_t>(e.rdev)) !=
        0) {
      return errno_status(errno, "mknod '" + e.path + "'");
    }
    FERRY_RETURN_IF_ERROR(set_link_meta(e, loc));
    // Opening a device to fchmod it could have side effects; the node was
    // just made by us in a directory we hold, so the name is still ours.
    if (::fchmodat(loc.parent.get(), loc.leaf.c_str(), e.mode, 0) != 0) {
      return errno_status(errno, "chmod '" + e.path + "'");
    }
    ++stats.special;
    return {};
  }

  int diff_fd_;
  int root_fd_;
};

}  // namespace

Result<DiffStats> apply_diff(const std::string& diff_dir, const std::string& rootfs) {
  const std::string context = "apply rootfs diff " + diff_dir + " to " + rootfs;
  auto diff = internal::open_dir(diff_dir);
  if (!diff.ok()) return diff.status().with_context(context);
  auto text = read_index(diff->get(), diff_dir);
  if (!text.ok()) return text.status().with_context(context);
  auto index = index_from_json(*text);
  if (!index.ok()) return index.status().with_context(context);
  FERRY_RETURN_IF_ERROR(validate_index(*index).with_context(context));
  auto root = internal::open_dir(rootfs);
  if (!root.ok()) return root.status().with_context(context);

  Applier applier(diff->get(), root->get());
  for (const auto& e : index->entries) {
    FERRY_RETURN_IF_ERROR(applier.apply(e).with_context(context + ": '" + e.path + "'"));
  }
  FERRY_RETURN_IF_ERROR(applier.finish_dirs(*index).with_context(context));
  return applier.stats;
}

}  // namespace ferry::rootfs
