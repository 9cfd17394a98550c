#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <utility>

#include "rootfs/diff.h"
#include "rootfs/safe_fs.h"

namespace ferry::rootfs {

using internal::errno_status;
using internal::UniqueFd;

namespace {

constexpr std::string_view kTrustedOverlay = "trusted.overlay.";
constexpr std::string_view kUserOverlay = "user.overlay.";

// All extended attributes of `fd`, overlayfs' own included.
Result<std::map<std::string, std::string>> read_xattrs(int fd, const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t len = ::flistxattr(fd, nullptr, 0);
  if (len < 0) {
    if (errno == ENOTSUP) return out;
    return errno_status(errno, "list xattrs of " + path);
  }
  std::string names(static_cast<size_t>(len), '\0');
  len = ::flistxattr(fd, names.data(), names.size());
  if (len < 0) return errno_status(errno, "list xattrs of " + path);
  names.resize(static_cast<size_t>(len));
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty()) continue;
    ssize_t vlen = ::fgetxattr(fd, name.c_str(), nullptr, 0);
    if (vlen < 0) {
      if (errno == ENODATA) continue;  // removed meanwhile
      return errno_status(errno, "read xattr " + name + " of " + path);
    }
    std::string value(static_cast<size_t>(vlen), '\0');
    vlen = ::fgetxattr(fd, name.c_str(), value.data(), value.size());
    if (vlen < 0) return errno_status(errno, "read xattr " + name + " of " + path);
    value.resize(static_cast<size_t>(vlen));
    out.emplace(std::move(name), std::move(value));
  }
  return out;
}

bool has_overlay_xattr(const std::map<std::string, std::string>& xattrs, std::string_view suffix,
                       std::string* value = nullptr) {
  for (auto prefix : {kTrustedOverlay, kUserOverlay}) {
    auto it = xattrs.find(std::string(prefix) + std::string(suffix));
    if (it != xattrs.end()) {
      if (value) *value = it->second;
      return true;
    }
  }
  return false;
}

// Overlay's bookkeeping attributes describe the upper dir, not the file, and
// would confuse an overlay that the target rootfs may be.
std::map<std::string, std::string> user_xattrs(std::map<std::string, std::string> xattrs) {
  std::erase_if(xattrs, [](const auto& kv) {
    return kv.first.starts_with(kTrustedOverlay) || kv.first.starts_with(kUserOverlay);
  });
  return xattrs;
}

class Capturer {
 public:
  Capturer(int data_fd, std::string upper) : data_fd_(data_fd), upper_(std::move(upper)) {}

  Status walk(int dirfd, const std::string& prefix) {
    auto names = internal::list_dir(dirfd);
    if (!names.ok()) return names.status().with_context("capture " + upper_ + "/" + prefix);
    for (const auto& name : *names) {
      std::string path = prefix.empty() ? name : prefix + "/" + name;
      FERRY_RETURN_IF_ERROR(capture_entry(dirfd, name, path));
    }
    return {};
  }

  DiffIndex index;
  DiffStats stats;

 private:
  static void set_meta(DiffEntry& e, const struct stat& st) {
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime_sec = st.st_mtim.tv_sec;
    e.mtime_nsec = st.st_mtim.tv_nsec;
  }

  Status capture_entry(int dirfd, const std::string& name, const std::string& path) {
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_status(errno, "stat " + upper_ + "/" + path);
    }
    DiffEntry e;
    e.path = path;
    set_meta(e, st);
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        return capture_dir(dirfd, name, std::move(e));
      case S_IFREG:
        return capture_file(dirfd, name, st, std::move(e));
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (n < 0) return errno_status(errno, "readlink " + upper_ + "/" + path);
        target.resize(static_cast<size_t>(n));
        e.type = EntryType::kSymlink;
        e.symlink_target = std::move(target);
        ++stats.symlinks;
        break;
      }
      case S_IFCHR:
        if (st.st_rdev == makedev(0, 0)) {
          e = DiffEntry{.path = path, .type = EntryType::kWhiteout};
          ++stats.deletions;
        } else {
          e.type = EntryType::kCharDevice;
          e.rdev = st.st_rdev;
          ++stats.special;
        }
        break;
      case S_IFBLK:
        e.type = EntryType::kBlockDevice;
        e.rdev = st.st_rdev;
        ++stats.special;
        break;
      case S_IFIFO:
        e.type = EntryType::kFifo;
        ++stats.special;
        break;
      default:  // sockets: CRIU recreates bound unix sockets itself
        ++stats.skipped;
        return {};
    }
    index.entries.push_back(std::move(e));
    return {};
  }

  Status capture_dir(int dirfd, const std::string& name, DiffEntry e) {
    UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child.valid()) return errno_status(errno, "open " + upper_ + "/" + e.path);
    auto xattrs = read_xattrs(child.get(), e.path);
    if (!xattrs.ok()) return xattrs.status();
    if (has_overlay_xattr(*xattrs, "redirect")) {
      return Status(Code::kUnsupported,
                    "directory '" + e.path +
                        "' was renamed under overlayfs redirect_dir: its content stays in the "
                        "image layers and cannot be carried by a diff",
                    "RootfsDiffUnsupported");
    }
    std::string opaque;
    // "y" is opaque; "x" only marks a directory holding xattr whiteouts.
    e.opaque = has_overlay_xattr(*xattrs, "opaque", &opaque) && opaque == "y";
    e.type = EntryType::kDirectory;
    e.xattrs = user_xattrs(std::move(*xattrs));
    ++stats.dirs;
    if (e.opaque) ++stats.opaque_dirs;
    std::string path = e.path;
    index.entries.push_back(std::move(e));
    return walk(child.get(), path);
  }

  Status capture_file(int dirfd, const std::string& name, const struct stat& st, DiffEntry e) {
    if (st.st_nlink > 1) {
      auto [it, inserted] = links_.emplace(std::make_pair(st.st_dev, st.st_ino), e.path);
      if (!inserted) {
        index.entries.push_back(
            DiffEntry{.path = e.path, .type = EntryType::kHardlink, .link_to = it->second});
        ++stats.hardlinks;
        return {};
      }
    }
    UniqueFd in(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
    if (!in.valid()) return errno_status(errno, "open " + upper_ + "/" + e.path);
    auto xattrs = read_xattrs(in.get(), e.path);
    if (!xattrs.ok()) return xattrs.status();
    if (has_overlay_xattr(*xattrs, "metacopy")) {
      return Status(Code::kUnsupported,
                    "file '" + e.path +
                        "' is an overlayfs metacopy (its data is in the image layers); mount "
                        "without metacopy=on to migrate this container",
                    "RootfsDiffUnsupported");
    }
    if (has_overlay_xattr(*xattrs, "whiteout")) {  // xattr whiteouts (Linux 6.7+)
      links_.erase(std::make_pair(st.st_dev, st.st_ino));
      index.entries.push_back(DiffEntry{.path = e.path, .type = EntryType::kWhiteout});
      ++stats.deletions;
      return {};
    }
    std::string data_name = std::to_string(next_data_++);
    UniqueFd out(::openat(data_fd_, data_name.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out.valid()) return errno_status(errno, "create diff content for " + e.path);
    auto copied = internal::copy_fd(in.get(), out.get(), e.path);
    if (!copied.ok()) return copied.status();
    e.type = EntryType::kFile;
    e.data = std::string(kDataDir) + "/" + data_name;
    e.size = *copied;
    e.xattrs = user_xattrs(std::move(*xattrs));
    ++stats.files;
    stats.bytes += *copied;
    index.entries.push_back(std::move(e));
    return {};
  }

  int data_fd_;
  std::string upper_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
  std::uint64_t next_data_ = 0;
};

Status write_file_at(int dirfd, const char* name, const std::string& content,
                     const std::string& what) {
  UniqueFd fd(::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_status(errno, "create " + what);
  for (size_t done = 0; done < content.size();) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "write " + what);
    done += static_cast<size_t>(n);
  }
  if (::close(fd.release()) != 0) {  // NFS reports a full disk here
    return errno_status(errno, "close " + what);
  }
  return {};
}

}  // namespace

Result<DiffStats> capture_upper_dir(const std::string& upper_dir, const std::string& out_dir) {
  auto upper = internal::open_dir(upper_dir);
  if (!upper.ok()) return upper.status().with_context("capture rootfs diff");
  if (::mkdir(out_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return errno_status(errno, "capture rootfs diff: create " + out_dir);
  }
  auto out = internal::open_dir(out_dir);
  if (!out.ok()) return out.status().with_context("capture rootfs diff");
  auto existing = internal::list_dir(out->get());
  if (!existing.ok()) return existing.status();
  if (!existing->empty()) {
    return Status(Code::kAlreadyExists,
                  "capture rootfs diff: " + out_dir + " is not empty; refusing to mix two diffs");
  }
  if (::mkdirat(out->get(), kDataDir, 0700) != 0) {
    return errno_status(errno, "capture rootfs diff: create " + out_dir + "/" + kDataDir);
  }
  UniqueFd data(::openat(out->get(), kDataDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!data.valid()) return errno_status(errno, "open " + out_dir + "/" + kDataDir);

  Capturer capturer(data.get(), upper_dir);
  FERRY_RETURN_IF_ERROR(capturer.walk(upper->get(), "").with_context("capture rootfs diff"));
  FERRY_RETURN_IF_ERROR(write_file_at(out->get(), kIndexFile, index_to_json(capturer.index),
                                      out_dir + "/" + kIndexFile)
                            .with_context("capture rootfs diff"));
  return capturer.stats;
}

}  // namespace ferry::rootfs
