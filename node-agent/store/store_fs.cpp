#include "store/store_fs.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

namespace ferry::store::internal {

Status errno_status(int err, const std::string& what) {
  std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return {Code::kResourceExhausted, "snapshot store is full: " + message, "SnapshotStoreFull"};
    case ENOENT:
      return {Code::kNotFound, std::move(message)};
    case EACCES:
    case EPERM:
      return {Code::kPermissionDenied, std::move(message)};
    default:
      return {Code::kInternal, std::move(message)};
  }
}

Status write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "write " + what);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Status fsync_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "open " + path);
  if (::fsync(fd.get()) != 0) return errno_status(errno, "fsync " + path);
  return {};
}

Status remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);  // removes symlinks, does not follow them
  if (ec) return errno_status(ec.value(), "remove " + path);
  return {};
}

std::string random_name() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (errno != EINTR) {
      // Without getrandom(2) (Linux < 3.17) the names only need to be unique.
      std::random_device rd;
      for (; got < sizeof bytes; ++got) bytes[got] = static_cast<unsigned char>(rd());
    }
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

}  // namespace ferry::store::internal
