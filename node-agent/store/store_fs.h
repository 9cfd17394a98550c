// POSIX helpers shared by the store's files: fd ownership, errno mapping,
// durable writes. Internal to ferry_store.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "status/status.h"

namespace ferry::store::internal {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

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
