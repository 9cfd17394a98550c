#include "store/snapshot_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "posix/atomic_file.h"
#include "store/hashing.h"
#include "store/store_fs.h"

namespace ferry::store {
namespace {

namespace fs = std::filesystem;
using internal::errno_status;
using internal::UniqueFd;

constexpr char kStagingDir[] = ".staging";
constexpr char kTrashDir[] = ".trash";
constexpr std::size_t kCopyChunk = 1 << 20;

// Names become single path components under the root. A leading '.' is
// reserved for the store's own directories.
bool safe_name(const std::string& name) {
  return !name.empty() && name.size() <= 253 && name.front() != '.' &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

bool safe_rel_path(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string::npos) return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string_view part(path.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

std::string describe(const Binding& b) {
  return "pod " + b.namespace_name + "/" + b.pod_name + " (uid " + b.pod_uid + ") container " +
         b.container_name;
}

Status check_names(const std::string& migration_uid, const std::string& container) {
  if (!safe_name(migration_uid)) {
    return invalid_argument("migration uid '" + migration_uid + "' is not a safe directory name");
  }
  if (!safe_name(container)) {
    return invalid_argument("container name '" + container + "' is not a safe directory name");
  }
  return {};
}

Status check_pod_binding(const Binding& b) {
  if (b.namespace_name.empty() || b.pod_name.empty() || b.pod_uid.empty() ||
      b.container_name.empty()) {
    return invalid_argument("snapshot binding needs namespace, pod name, pod uid and container (" +
                            describe(b) + ")");
  }
  return {};
}

// A snapshot may be published before its pod exists (an owner creates the
// replacement only after the source is gone): then the pod uid, and the
// name unless it is fixed (StatefulSet), come later by grant().
Status check_snapshot_binding(const Binding& b) {
  if (b.namespace_name.empty() || b.container_name.empty() ||
      (!b.pod_uid.empty() && b.pod_name.empty())) {
    return invalid_argument(
        "snapshot binding needs namespace, container, and a pod name with any pod uid (" +
        describe(b) + ")");
  }
  return {};
}

std::string grant_file(const std::string& root, const std::string& migration_uid) {
  return root + "/" + migration_uid + ".grant";
}

Status not_found(const std::string& message, const char* reason) {
  return {Code::kNotFound, message, reason};
}

Status data_loss(const std::string& message, const char* reason) {
  return {Code::kDataLoss, message, reason};
}

// Opens and flocks the directory `path`, making sure the lock is on the
// directory that is at `path` now: removal renames a locked directory away,
// so a lock won on the old inode would protect nothing.
Result<UniqueFd> lock_dir(const std::string& path, int op, bool create, bool* created = nullptr) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (create) {
      if (::mkdir(path.c_str(), 0700) == 0) {
        if (created) *created = true;
      } else if (errno != EEXIST) {
        return errno_status(errno, "create " + path);
      }
    }
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT && create) continue;
      return errno_status(errno, "open " + path);
    }
    while (::flock(fd.get(), op) != 0) {
      if (errno == EINTR) continue;
      if (errno == EWOULDBLOCK) {
        return Status(Code::kUnavailable, path + " is in use (locked by a reader or writer)",
                      "SnapshotInUse");
      }
      return errno_status(errno, "flock " + path);
    }
    struct stat held {
    }, now{};
    if (::fstat(fd.get(), &held) != 0) return errno_status(errno, "stat " + path);
    if (::lstat(path.c_str(), &now) == 0 && now.st_dev == held.st_dev &&
        now.st_ino == held.st_ino) {
      return fd;
    }
    if (!create) return errno_status(ENOENT, "open " + path + " (removed meanwhile)");
  }
  return unavailable("could not lock " + path + ": it keeps being replaced");
}

struct Tree {
  std::vector<std::string> files;  // relative, regular files
  std::vector<std::string> dirs;   // relative
  std::vector<std::string> other;  // relative: symlinks, devices, ...
  std::uint64_t bytes = 0;
};

Result<Tree> walk(const std::string& root) {
  Tree tree;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    auto st = it->symlink_status(ec);
    if (ec) break;
    std::string rel = fs::relative(it->path(), root, ec).generic_string();
    if (ec) break;
    if (fs::is_regular_file(st)) {
      tree.files.push_back(rel);
      tree.bytes += it->file_size(ec);
    } else if (fs::is_directory(st)) {
      tree.dirs.push_back(rel);
    } else {
      tree.other.push_back(rel);
    }
  }
  if (ec) return errno_status(ec.value(), "list " + root);
  std::sort(tree.files.begin(), tree.files.end());
  return tree;
}

void fill_host_facts(SnapshotMeta& meta) {
  struct utsname u {};
  if (::uname(&u) != 0) return;
  if (meta.kernel.empty()) meta.kernel = u.release;
  if (meta.architecture.empty()) meta.architecture = u.machine;
}

Result<std::string> read_small_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "open " + path);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "read " + path);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
  }
}

// Names in a directory; none when it does not exist or cannot be read
// (retention works with what it can see).
std::vector<std::string> list_names(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::chrono::system_clock::time_point mtime_of(const struct stat& st) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

// Renames `path` into the trash under its lock, then deletes it unlocked:
// readers that lost the race find the path gone, not half-deleted.
Status remove_locked_dir(const std::string& root, const std::string& path) {
  auto lock = lock_dir(path, LOCK_EX | LOCK_NB, /*create=*/false);
  if (!lock.ok()) {
    if (lock.status().code() == Code::kNotFound) return {};
    return lock.status();
  }
  std::string trash = root + "/" + kTrashDir;
  if (::mkdir(trash.c_str(), 0700) != 0 && errno != EEXIST) {
    return errno_status(errno, "create " + trash);
  }
  std::string target = trash + "/" + internal::random_name();
  if (::rename(path.c_str(), target.c_str()) != 0) {
    return errno_status(errno, "move " + path + " to " + target);
  }
  *lock = UniqueFd();
  return internal::remove_tree(target);
}

}  // namespace

// ---- SnapshotLease --------------------------------------------------------

SnapshotLease& SnapshotLease::operator=(SnapshotLease&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

SnapshotLease::~SnapshotLease() {
  if (fd_ >= 0) ::close(fd_);
}

// ---- SnapshotWriter -------------------------------------------------------

SnapshotWriter::SnapshotWriter(std::string root, StoreOptions options, SnapshotMeta meta,
                               std::string dir, int lock_fd)
    : root_(std::move(root)),
      options_(std::move(options)),
      meta_(std::move(meta)),
      dir_(std::move(dir)),
      staging_lock_(lock_fd) {}

SnapshotWriter::~SnapshotWriter() {
  hasher_.reset();  // stops reading the files before they go
  if (!done_) (void)internal::remove_tree(dir_);
}

Status SnapshotWriter::add_file(const std::string& rel_path, std::string_view data) {
  return add_file_impl(rel_path, -1, data);
}

Status SnapshotWriter::add_file_from(const std::string& rel_path, const std::string& source) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return errno_status(errno, "add " + rel_path + ": open " + source);
  return add_file_impl(rel_path, in.get(), {});
}

Status SnapshotWriter::add_file_impl(const std::string& rel_path, int source_fd,
                                     std::string_view data) {
  if (done_) return failed_precondition("add " + rel_path + ": snapshot already published");
  if (!safe_rel_path(rel_path) || rel_path == kManifestFile) {
    return invalid_argument("add " + rel_path + ": not a usable relative path in a snapshot");
  }
  for (size_t slash = rel_path.find('/'); slash != std::string::npos;
       slash = rel_path.find('/', slash + 1)) {
    std::string parent = dir_ + "/" + rel_path.substr(0, slash);
    if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) {
      return errno_status(errno, "add " + rel_path + ": create " + parent);
    }
  }
  std::string path = dir_ + "/" + rel_path;
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out.valid()) return errno_status(errno, "add " + rel_path);
  Digester digest(options_.digest_algorithm);
  std::uint64_t size = 0;
  Status st = [&]() -> Status {
    if (source_fd < 0) {
      digest.update(data.data(), data.size());
      size = data.size();
      return internal::write_all(out.get(), data, path);
    }
    std::vector<char> buf(kCopyChunk);
    for (;;) {
      ssize_t n = ::read(source_fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_status(errno, "read source of " + rel_path);
      if (n == 0) return {};
      digest.update(buf.data(), static_cast<size_t>(n));
      size += static_cast<std::uint64_t>(n);
      FERRY_RETURN_IF_ERROR(internal::write_all(
          out.get(), std::string_view(buf.data(), static_cast<size_t>(n)), path));
    }
  }();
  if (st.ok() && ::fsync(out.get()) != 0) st = errno_status(errno, "fsync " + path);
  if (st.ok() && ::close(out.release()) != 0) st = errno_status(errno, "close " + path);
  if (!st.ok()) {
    ::unlink(path.c_str());  // a partial file must not look like data
    return st.with_context("add " + rel_path + " to snapshot " + meta_.binding.migration_uid + "/" +
                           meta_.binding.container_name);
  }
  added_.push_back({.path = rel_path, .size = size, .digest = digest.hex_digest(), .mode = 0600});
  return {};
}

void SnapshotWriter::hash_while_written() {
  if (!hasher_ && !done_) {
    hasher_ = std::make_unique<BackgroundHasher>(
        dir_, options_.digest_algorithm, options_.digest_chunk_bytes, options_.hash_threads);
  }
}

Result<Manifest> SnapshotWriter::publish() {
  const std::string what =
      "publish snapshot " + meta_.binding.migration_uid + "/" + meta_.binding.container_name;
  if (done_) return failed_precondition(what + ": already published or failed");
  bool created_parent = false;
  auto result = publish_steps(&created_parent);
  done_ = true;
  hasher_.reset();
  staging_lock_ = SnapshotLease();
  if (result.ok()) return result;

  std::string cleanup;
  if (Status rm = internal::remove_tree(dir_); !rm.ok()) {
    cleanup = "; also failed to remove the staging dir: " + rm.message();
  }
  if (created_parent) {
    // Only when no other writer or reader holds it: they may be about to
    // publish into it.
    std::string parent = root_ + "/" + meta_.binding.migration_uid;
    if (auto lock = lock_dir(parent, LOCK_EX | LOCK_NB, false); lock.ok()) {
      ::rmdir(parent.c_str());
    }
  }
  const Status& s = result.status();
  return Status(s.code(), what + ": " + s.message() + "; nothing was published" + cleanup,
                s.reason());
}

Result<Manifest> SnapshotWriter::publish_steps(bool* created_parent) {
  auto tree = walk(dir_);
  if (!tree.ok()) return tree.status();
  if (!tree->other.empty()) {
    return invalid_argument("staging dir holds '" + tree->other.front() +
                            "', which is not a regular file or directory");
  }
  std::set<std::string> added;
  for (const auto& f : added_) added.insert(f.path);
  std::vector<std::string> to_hash;
  for (const auto& f : tree->files) {
    if (f == kManifestFile) return invalid_argument("staging dir already holds a manifest.json");
    if (!added.count(f)) to_hash.push_back(f);
  }
  for (const auto& d : tree->dirs) {
    if (::chmod((dir_ + "/" + d).c_str(), 0700) != 0) {
      return errno_status(errno, "chmod 0700 " + dir_ + "/" + d);
    }
  }
  // What the background hasher already digested (all that CRIU had written
  // of its files) is not read again.
  std::map<std::string, BackgroundHasher::Digested> known;
  if (hasher_) known = hasher_->finish();
  const std::uint64_t chunk = options_.digest_chunk_bytes;
  std::vector<HashTarget> targets;
  targets.reserve(to_hash.size());
  for (auto& path : to_hash) {
    HashTarget target{.path = std::move(path), .chunk_bytes = chunk};
    if (auto it = known.find(target.path); it != known.end()) {
      target.progress = std::move(it->second);
    }
    targets.push_back(std::move(target));
  }
  auto digests = hash_files(
      dir_, targets, options_.digest_algorithm,
      {.threads = options_.hash_threads, .fsync = options_.durable_data, .make_private = true});
  if (!digests.ok()) return digests.status();

  Manifest manifest;
  manifest.created = options_.now();
  manifest.digest_algorithm = options_.digest_algorithm;
  manifest.meta = meta_;
  fill_host_facts(manifest.meta);
  manifest.files = added_;
  for (auto& d : *digests) {
    ManifestFile file{.path = std::move(d.path), .size = d.size, .mode = 0600};
    if (d.digests.size() == 1) {
      file.digest = std::move(d.digests.front());  // one chunk is the whole file
    } else {
      file.digest_chunks = std::move(d.digests);
      manifest.chunk_bytes = chunk;
    }
    manifest.files.push_back(std::move(file));
  }
  std::sort(manifest.files.begin(), manifest.files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });

  const std::string manifest_path = dir_ + "/" + kManifestFile;
  {
    UniqueFd fd(
        ::open(manifest_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return errno_status(errno, "create " + manifest_path);
    FERRY_RETURN_IF_ERROR(internal::write_all(fd.get(), manifest_to_json(manifest), manifest_path));
    if (::fsync(fd.get()) != 0) return errno_status(errno, "fsync " + manifest_path);
    if (::close(fd.release()) != 0) return errno_status(errno, "close " + manifest_path);
  }
  // Deepest first, so each directory's entry is durable before its parent's.
  std::vector<std::string> dirs = tree->dirs;
  std::sort(dirs.begin(), dirs.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& d : dirs) FERRY_RETURN_IF_ERROR(internal::fsync_dir(dir_ + "/" + d));
  FERRY_RETURN_IF_ERROR(internal::fsync_dir(dir_));

  const std::string parent = root_ + "/" + meta_.binding.migration_uid;
  auto parent_lock = lock_dir(parent, LOCK_SH, /*create=*/true, created_parent);
  if (!parent_lock.ok()) return parent_lock.status();
  if (*created_parent) FERRY_RETURN_IF_ERROR(internal::fsync_dir(root_));
  const std::string& name = meta_.binding.container_name;
  const std::string target = parent + "/" + name;
  int rc = ::renameat2(AT_FDCWD, dir_.c_str(), parent_lock->get(), name.c_str(), RENAME_NOREPLACE);
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
    // Filesystems without RENAME_NOREPLACE (some NFS servers): plain rename
    // still refuses a non-empty target, and a published snapshot never is.
    rc = ::renameat(AT_FDCWD, dir_.c_str(), parent_lock->get(), name.c_str());
  }
  if (rc != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      return Status(Code::kAlreadyExists, target + " is already published", "SnapshotExists");
    }
    return errno_status(errno, "rename " + dir_ + " to " + target);
  }
  Status durable =
      ::fsync(parent_lock->get()) == 0 ? Status() : errno_status(errno, "fsync " + parent);
  if (durable.ok()) durable = internal::fsync_dir(root_ + "/" + kStagingDir);
  if (!durable.ok()) {
    (void)internal::remove_tree(target);  // visible but not durable: unpublish
    return durable;
  }
  return manifest;
}

// ---- SnapshotStore --------------------------------------------------------

SnapshotStore::SnapshotStore(std::string root, StoreOptions options)
    : root_(std::move(root)), options_(std::move(options)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string SnapshotStore::snapshot_dir(const std::string& migration_uid,
                                        const std::string& container) const {
  return root_ + "/" + migration_uid + "/" + container;
}

Result<std::unique_ptr<SnapshotWriter>> SnapshotStore::begin(const SnapshotMeta& meta) {
  const Binding& b = meta.binding;
  FERRY_RETURN_IF_ERROR(
      check_names(b.migration_uid, b.container_name).with_context("begin snapshot"));
  FERRY_RETURN_IF_ERROR(check_snapshot_binding(b).with_context("begin snapshot"));
  const std::string target = snapshot_dir(b.migration_uid, b.container_name);
  struct stat st {};
  if (::lstat(target.c_str(), &st) == 0) {
    return Status(Code::kAlreadyExists, "begin snapshot: " + target + " is already published",
                  "SnapshotExists");
  }
  // The root is shared storage mounted by the node; creating it here would
  // silently put snapshots on the local disk when the mount is missing.
  if (::stat(root_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return not_found("begin snapshot: store root " + root_ + " is not a directory (not mounted?)",
                     "SnapshotStoreMissing");
  }
  const std::string staging = root_ + "/" + kStagingDir;
  if (::mkdir(staging.c_str(), 0700) != 0 && errno != EEXIST) {
    return errno_status(errno, "begin snapshot: create " + staging);
  }
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string dir = staging + "/" + internal::random_name();
    if (::mkdir(dir.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;
      return errno_status(errno, "begin snapshot: create " + dir);
    }
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid() || ::fchmod(fd.get(), 0700) != 0 || ::flock(fd.get(), LOCK_EX) != 0) {
      Status s = errno_status(errno, "begin snapshot: prepare " + dir);
      ::rmdir(dir.c_str());
      return s;
    }
    return std::unique_ptr<SnapshotWriter>(
        new SnapshotWriter(root_, options_, meta, std::move(dir), fd.release()));
  }
  return internal_error("begin snapshot: no unique staging name after 8 attempts");
}

Status verify_checksums(const std::string& dir, const Manifest& manifest,
                        const std::vector<std::string>& paths, unsigned threads,
                        const std::string& what, LateStart* late_start) {
  std::vector<const ManifestFile*> listed;
  std::vector<HashTarget> targets;
  for (const auto& path : paths) {
    auto it = std::find_if(manifest.files.begin(), manifest.files.end(),
                           [&](const ManifestFile& f) { return f.path == path; });
    if (it == manifest.files.end()) {
      return data_loss(what + ": file " + path + " is not listed in the manifest",
                       "SnapshotUnlistedFile");
    }
    listed.push_back(&*it);
    targets.push_back(
        {.path = path, .chunk_bytes = it->digest_chunks.empty() ? 0 : manifest.chunk_bytes});
  }
  if (targets.empty()) return {};
  auto digests = hash_files(dir, targets, manifest.digest_algorithm,
                            {.threads = threads, .late_threads = 1, .late_start = late_start});
  if (!digests.ok()) return digests.status().with_context(what);
  for (size_t i = 0; i < targets.size(); ++i) {
    const ManifestFile& want_file = *listed[i];
    const auto& got = (*digests)[i];
    if (got.size != want_file.size) {
      return data_loss(what + ": file " + want_file.path + " changed size while verifying",
                       "SnapshotFileSizeMismatch");
    }
    const bool chunked = !want_file.digest_chunks.empty();
    for (size_t c = 0; c < got.digests.size(); ++c) {
      const std::string& want = chunked ? want_file.digest_chunks[c] : want_file.digest;
      if (got.digests[c] == want) continue;
      std::string where;
      if (chunked) {
        const std::uint64_t from = c * manifest.chunk_bytes;
        where = " in bytes " + std::to_string(from) + "-" +
                std::to_string(std::min(want_file.size, from + manifest.chunk_bytes) - 1);
      }
      return data_loss(what + ": file " + want_file.path + " is corrupted" + where + ": " +
                           std::string(digest_algorithm_name(manifest.digest_algorithm)) + " " +
                           got.digests[c] + ", the manifest says " + want,
                       "SnapshotChecksumMismatch");
    }
  }
  return {};
}

Result<VerifiedSnapshot> SnapshotStore::open(const std::string& migration_uid,
                                             const std::string& container, const Binding& expected,
                                             Verify level, const DeferChecksums& defer) const {
  const std::string dir = snapshot_dir(migration_uid, container);
  const std::string what = "open snapshot " + dir;
  FERRY_RETURN_IF_ERROR(check_names(migration_uid, container).with_context(what));
  FERRY_RETURN_IF_ERROR(check_pod_binding(expected).with_context(what));

  auto lock = lock_dir(root_ + "/" + migration_uid, LOCK_SH, /*create=*/false);
  if (!lock.ok()) {
    if (lock.status().code() == Code::kNotFound) {
      return not_found(what + ": no snapshot for migration " + migration_uid, "SnapshotNotFound");
    }
    return lock.status().with_context(what);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return not_found(
        what + ": no snapshot for container " + container + " of migration " + migration_uid,
        "SnapshotNotFound");
  }
  auto text = read_small_file(dir + "/" + kManifestFile);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) {
      return not_found(
          what + ": " + kManifestFile + " is missing (never completely published, or damaged)",
          "SnapshotManifestMissing");
    }
    return text.status().with_context(what);
  }
  auto manifest = manifest_from_json(*text);
  if (!manifest.ok()) return manifest.status().with_context(what);

  // The binding first: a snapshot of another pod is refused whatever its state.
  Binding want = expected;
  want.migration_uid = migration_uid;
  Binding have = manifest->meta.binding;
  if (have.pod_uid.empty()) {
    // Published for a pod its owner had not created yet: the grant names it.
    auto granted = read_grant(migration_uid);
    if (!granted.ok()) return granted.status().with_context(what);
    if (!have.pod_name.empty() && have.pod_name != granted->pod_name) {
      return Status(
          Code::kFailedPrecondition,
          what + ": granted to pod " + granted->pod_name + ", but bound to name " + have.pod_name,
          "SnapshotBindingMismatch");
    }
    have.pod_name = granted->pod_name;
    have.pod_uid = granted->pod_uid;
  }
  if (have != want || have.container_name != container) {
    return Status(Code::kFailedPrecondition,
                  what + ": bound to " + describe(have) + " of migration " + have.migration_uid +
                      ", not to " + describe(want) + " of migration " + migration_uid,
                  "SnapshotBindingMismatch");
  }

  auto tree = walk(dir);
  if (!tree.ok()) return tree.status().with_context(what);
  std::set<std::string> present(tree->files.begin(), tree->files.end());
  present.insert(tree->other.begin(), tree->other.end());
  present.erase(kManifestFile);
  for (const auto& f : manifest->files) {
    if (!safe_rel_path(f.path) || f.path == kManifestFile) {
      return data_loss(what + ": manifest lists unsafe path '" + f.path + "'",
                       "SnapshotManifestInvalid");
    }
    if (::lstat((dir + "/" + f.path).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return data_loss(what + ": file " + f.path + " listed in the manifest is missing",
                       "SnapshotFileMissing");
    }
    if (static_cast<std::uint64_t>(st.st_size) != f.size) {
      return data_loss(what + ": file " + f.path + " has " + std::to_string(st.st_size) +
                           " bytes, the manifest says " + std::to_string(f.size) + " (truncated?)",
                       "SnapshotFileSizeMismatch");
    }
    present.erase(f.path);
  }
  if (!present.empty()) {
    return data_loss(what + ": file " + *present.begin() + " is not listed in the manifest",
                     "SnapshotUnlistedFile");
  }
  std::vector<std::string> unverified;
  if (level == Verify::kFull) {
    std::vector<std::string> now;
    for (const auto& f : manifest->files) {
      (defer && defer(f.path) ? unverified : now).push_back(f.path);
    }
    FERRY_RETURN_IF_ERROR(verify_checksums(dir, *manifest, now, options_.hash_threads, what));
  }
  return VerifiedSnapshot{.dir = dir,
                          .manifest = std::move(*manifest),
                          .lease = SnapshotLease(lock->release()),
                          .unverified = std::move(unverified)};
}

Status SnapshotStore::remove(const std::string& migration_uid) const {
  if (!safe_name(migration_uid)) {
    return invalid_argument("remove snapshot: migration uid '" + migration_uid +
                            "' is not a safe directory name");
  }
  FERRY_RETURN_IF_ERROR(remove_locked_dir(root_, root_ + "/" + migration_uid)
                            .with_context("remove snapshots of migration " + migration_uid));
  if (::unlink(grant_file(root_, migration_uid).c_str()) != 0 && errno != ENOENT) {
    return errno_status(errno, "remove the grant of migration " + migration_uid);
  }
  return {};
}

Status SnapshotStore::grant(const std::string& migration_uid, const Grant& to) const {
  const std::string what = "grant the snapshots of migration " + migration_uid + " to pod " +
                           to.pod_name + " (uid " + to.pod_uid + ")";
  if (!safe_name(migration_uid) || to.pod_name.empty() || to.pod_uid.empty()) {
    return invalid_argument(what + ": needs a safe migration uid, a pod name and a pod uid");
  }
  auto existing = read_grant(migration_uid);
  if (existing.ok()) {
    if (existing->pod_uid == to.pod_uid && existing->pod_name == to.pod_name) return {};
    return Status(Code::kAlreadyExists,
                  what + ": already granted to pod " + existing->pod_name + " (uid " +
                      existing->pod_uid + ")",
                  "SnapshotAlreadyGranted");
  }
  if (existing.status().reason() != "SnapshotNotGranted") return existing.status();
  const nlohmann::json doc = {{"podName", to.pod_name}, {"podUID", to.pod_uid}};
  return posix::write_file_atomic(grant_file(root_, migration_uid), doc.dump() + "\n", 0600)
      .with_context(what);
}

Result<Grant> SnapshotStore::read_grant(const std::string& migration_uid) const {
  auto text = read_small_file(grant_file(root_, migration_uid));
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) {
      return not_found("migration " + migration_uid +
                           " is not granted to a pod yet (its owner has not created the "
                           "replacement)",
                       "SnapshotNotGranted");
    }
    return text.status();
  }
  auto doc = nlohmann::json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("podName", "").empty() ||
      doc.value("podUID", "").empty()) {
    return data_loss("the grant of migration " + migration_uid + " is damaged",
                     "SnapshotGrantInvalid");
  }
  return Grant{.pod_name = doc["podName"], .pod_uid = doc["podUID"]};
}

Result<RetentionReport> SnapshotStore::enforce_retention(const RetentionPolicy& policy) const {
  const auto now = options_.now();
  auto too_old = [&](std::chrono::system_clock::time_point t) { return now - t > policy.max_age; };
  RetentionReport report;

  // Leftovers of removals interrupted by a crash: nobody holds them.
  const std::string trash = root_ + "/" + kTrashDir;
  for (const auto& name : list_names(trash)) {
    FERRY_RETURN_IF_ERROR(internal::remove_tree(trash + "/" + name));
  }
  // Staging dirs of writers that died: a live writer holds its lock.
  const std::string staging = root_ + "/" + kStagingDir;
  for (const auto& name : list_names(staging)) {
    const std::string path = staging + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !too_old(mtime_of(st))) continue;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.valid() && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
    FERRY_RETURN_IF_ERROR(internal::remove_tree(path));
    ++report.staging_removed;
  }

  struct Migration {
    std::string uid;
    std::chrono::system_clock::time_point created;  // of its newest snapshot
    std::uint64_t bytes = 0;
  };
  std::vector<Migration> migrations;
  std::uint64_t total = 0;
  struct stat root_st {};
  if (::stat(root_.c_str(), &root_st) != 0) return errno_status(errno, "retention: " + root_);
  for (const auto& uid : list_names(root_)) {
    const std::string mig_dir = root_ + "/" + uid;
    struct stat st {};
    if (!safe_name(uid) || ::lstat(mig_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    Migration m{.uid = uid};
    // A damaged or half-removed snapshot has no usable `created`: its
    // directory's mtime stands in.
    bool have_manifest = false;
    auto fallback = mtime_of(st);
    for (const auto& container : list_names(mig_dir)) {
      const std::string dir = mig_dir + "/" + container;
      auto text = read_small_file(dir + "/" + kManifestFile);
      Result<Manifest> manifest = text.ok() ? manifest_from_json(*text) : text.status();
      if (manifest.ok()) {
        m.created = have_manifest ? std::max(m.created, manifest->created) : manifest->created;
        have_manifest = true;
      } else if (::lstat(dir.c_str(), &st) == 0) {
        fallback = std::max(fallback, mtime_of(st));
      }
      if (auto tree = walk(dir); tree.ok()) m.bytes += tree->bytes;
    }
    if (!have_manifest) m.created = fallback;
    total += m.bytes;
    migrations.push_back(std::move(m));
  }
  std::sort(migrations.begin(), migrations.end(),
            [](const auto& a, const auto& b) { return a.created < b.created; });
  for (const auto& m : migrations) {
    const char* why = too_old(m.created)               ? "age"
                      : total > policy.max_total_bytes ? "size"
                                                       : nullptr;
    if (why == nullptr) continue;
    Status s = remove_locked_dir(root_, root_ + "/" + m.uid);
    if (s.code() == Code::kUnavailable) {
      report.in_use.push_back(m.uid);
      continue;
    }
    FERRY_RETURN_IF_ERROR(s.with_context("retention"));
    // Its grant goes with it, or grants would pile up in the root forever.
    if (::unlink(grant_file(root_, m.uid).c_str()) != 0 && errno != ENOENT) {
      return errno_status(errno, "retention: remove the grant of migration " + m.uid);
    }
    total -= m.bytes;
    report.removed.push_back({.migration_uid = m.uid, .bytes = m.bytes, .why = why});
  }
  report.bytes_remaining = total;
  return report;
}

}  // namespace ferry::store
