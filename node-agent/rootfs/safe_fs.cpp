#include "rootfs/safe_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace ferry::rootfs::internal {

Status errno_status(int err, const std::string& what) {
  std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return {Code::kResourceExhausted, std::move(message)};
    case ENOENT:
      return {Code::kNotFound, std::move(message)};
    case EACCES:
    case EPERM:
      return {Code::kPermissionDenied, std::move(message)};
    default:
      return {Code::kInternal, std::move(message)};
  }
}

Result<std::vector<std::string>> split_relative_path(std::string_view path) {
  if (path.empty()) return invalid_argument("empty path");
  if (path.find('\0') != std::string_view::npos) return invalid_argument("path contains NUL");
  if (path.front() == '/') {
    return invalid_argument("absolute path '" + std::string(path) + "'");
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return invalid_argument("path '" + std::string(path) + "' has a '" + std::string(part) +
                              "' component");
    }
    parts.emplace_back(part);
    start = end + 1;
  }
  return parts;
}

Result<UniqueFd> open_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "open directory " + path);
  return fd;
}

Result<UniqueFd> open_dir_beneath(int dirfd, const std::vector<std::string>& components,
                                  std::string_view display) {
  UniqueFd current(::fcntl(dirfd, F_DUPFD_CLOEXEC, 0));
  if (!current.valid()) return errno_status(errno, "dup directory fd");
  std::string walked;
  for (const auto& part : components) {
    walked += walked.empty() ? part : "/" + part;
    UniqueFd next(
        ::openat(current.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      int err = errno;
      if (err == ELOOP || err == ENOTDIR) {
        struct stat st {};
        bool symlink = ::fstatat(current.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISLNK(st.st_mode);
        return Status(
            Code::kPermissionDenied,
            "refusing to resolve '" + std::string(display) + "': '" + walked + "' is " +
                (symlink ? "a symlink, and following it could leave the tree" : "not a directory"),
            "UnsafeRootfsDiff");
      }
      return errno_status(err, "open '" + walked + "'");
    }
    current = std::move(next);
  }
  return current;
}

Result<std::vector<std::string>> list_dir(int dirfd) {
  int copy = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) return errno_status(errno, "reopen directory");
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    int err = errno;
    ::close(copy);
    return errno_status(err, "fdopendir");
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = ::readdir(dir)) {
    std::string_view name(entry->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return errno_status(err, "readdir");
  std::sort(names.begin(), names.end());
  return names;
}

Status remove_children(int dirfd) {
  auto names = list_dir(dirfd);
  if (!names.ok()) return names.status();
  for (const auto& name : *names) FERRY_RETURN_IF_ERROR(remove_tree_at(dirfd, name));
  return {};
}

Status remove_tree_at(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return errno_status(errno, "stat '" + name + "'");
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child.valid()) return errno_status(errno, "open '" + name + "'");
    FERRY_RETURN_IF_ERROR(remove_children(child.get()).with_context(name));
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
      return errno_status(errno, "remove directory '" + name + "'");
    }
    return {};
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return errno_status(errno, "remove '" + name + "'");
  }
  return {};
}

// Copies all of `in` to `out`: copy_file_range first (a reflink or an
// in-kernel copy), read/write where the filesystems do not support it.
Result<std::uint64_t> copy_fd(int in, int out, const std::string& what) {
  std::uint64_t total = 0;
  bool kernel_copy = true;
  while (kernel_copy) {
    ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0);
    if (n == 0) return total;
    if (n > 0) {
      total += static_cast<std::uint64_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      return errno_status(errno, "copy " + what);
    }
    kernel_copy = false;
  }
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "read " + what);
    if (n == 0) return total;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno_status(errno, "write " + what);
      done += w;
    }
    total += static_cast<std::uint64_t>(n);
  }
}

}  // namespace ferry::rootfs::internal
