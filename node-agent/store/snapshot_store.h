// The snapshot store: where a checkpoint waits, on storage every node can
// see, between the source's dump and the target's restore. A snapshot must
// either be complete and checked or not exist at all, because a restore from
// a half-written or corrupted image set brings back a process with wrong
// memory. So a writer fills a private staging directory (CRIU dumps straight
// into it), publish() hashes and fsyncs everything, writes the manifest and
// renames the directory into place in one step; a reader verifies sizes,
// checksums and the pod binding before anything is used. Snapshots hold
// process memory (secrets included), so everything is root-only. Cleanup is
// by age and total size, and never touches a snapshot that a writer, reader
// or restore in any process is using: those hold flock(2) locks.
//
// Layout under the root:
//   <root>/<migration-uid>/<container>/   published: CRIU images, rootfs diff, manifest.json
//   <root>/<migration-uid>.grant           the pod it may restore into, when the
//                                          binding left it open (grant())
//   <root>/.staging/<random>/             being written (flock LOCK_EX by its writer)
//   <root>/.trash/<random>/               being deleted
// Locking: a reader or publishing writer holds LOCK_SH on <root>/<migration-uid>;
// removal takes LOCK_EX without waiting, renames the directory to .trash,
// then deletes it. flock works on local filesystems and NFSv4; on NFS it is
// emulated with byte-range locks, which also works across nodes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "status/status.h"
#include "store/hashing.h"
#include "store/manifest.h"

namespace ferry::store {

struct StoreOptions {
  // 0: one per CPU, but one CPU is left to CRIU while it writes
  // (hash_while_written).
  unsigned hash_threads = 0;
  // Files larger than this are listed with one digest per chunk, hashed
  // and verified in parallel (hashing.h). Tests make it small.
  std::uint64_t digest_chunk_bytes = kDigestChunkBytes;
  // What publish() lists files with; readers use the manifest's own.
  DigestAlgorithm digest_algorithm = kDefaultDigestAlgorithm;
  // fsync every image file at publish. A live migration does not need it:
  // its source stays frozen until the target runs, so a snapshot lost to a
  // storage crash only means a rollback, while the fsync of a 1 GiB image
  // costs most of a second inside the freeze window (bench/results/engine.md).
  // Periodic snapshots kept for node-failure recovery must set it. The
  // manifest and the directory entries are fsynced either way, so a
  // published snapshot is never seen with a missing manifest after a crash
  // (its data may then fail verification, which refuses it).
  bool durable_data = true;
  // Wall clock for manifest `created` and retention ages; tests fake it.
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

// A held flock on a snapshot's migration directory; releasing it (by
// destruction) lets retention remove the snapshot again.
class SnapshotLease {
 public:
  SnapshotLease() = default;
  explicit SnapshotLease(int fd) : fd_(fd) {}
  SnapshotLease(SnapshotLease&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  SnapshotLease& operator=(SnapshotLease&& other) noexcept;
  SnapshotLease(const SnapshotLease&) = delete;
  SnapshotLease& operator=(const SnapshotLease&) = delete;
  ~SnapshotLease();

  bool held() const { return fd_ >= 0; }
  // The locked descriptor, so a process about to exec (ferry-runc handing
  // over to runc restore) can keep the lock held across the exec.
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// The pod a snapshot published without a pod uid may be restored into.
struct Grant {
  std::string pod_name;
  std::string pod_uid;
};

// A snapshot that passed verification. Keep it alive while its files are in
// use (the restore): retention will not remove it meanwhile.
struct VerifiedSnapshot {
  std::string dir;
  Manifest manifest;
  SnapshotLease lease;
  // Files whose sizes were checked but whose checksums were left to the
  // caller (OpenOptions::defer_checksums): verify_checksums() before
  // anything built from them is trusted.
  std::vector<std::string> unverified;
};

enum class Verify {
  kSizes,  // manifest, binding, file list and sizes: milliseconds, catches truncation
  kFull,   // and the digest of every byte: catches corruption, costs a read of everything
};

// With Verify::kFull, the files (paths relative to the snapshot) whose
// checksums open() leaves to the caller, listed in
// VerifiedSnapshot::unverified: a restore checks CRIU's memory images while
// CRIU reads them, and lets the process run only once they match.
using DeferChecksums = std::function<bool(const std::string& rel_path)>;

// Compares the digests of `paths` (relative to `dir`, each listed in
// `manifest`) with the manifest, by the manifest's algorithm, on `threads` threads (0: one per CPU)
// and, with `late_start`, one more that waits there first (HashOptions::late_threads). DataLoss
// naming the file and, for a chunked file, the corrupted byte range (SnapshotChecksumMismatch,
// SnapshotFileSizeMismatch); `what` starts every message.
Status verify_checksums(const std::string& dir, const Manifest& manifest,
                        const std::vector<std::string>& paths, unsigned threads,
                        const std::string& what, LateStart* late_start = nullptr);

// One snapshot being written. Not thread-safe; one owner.
class SnapshotWriter {
 public:
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  // Removes the staging directory unless publish() succeeded.
  ~SnapshotWriter();

  // The private staging directory (mode 0700). CRIU's --images-dir; other
  // producers may write regular files and subdirectories here too.
  const std::string& dir() const { return dir_; }
  const SnapshotMeta& meta() const { return meta_; }

  // Creates `rel_path` (O_EXCL, 0600, parents 0700) with `data`, hashing it
  // as it is written so publish() does not read it again.
  Status add_file(const std::string& rel_path, std::string_view data);
  // Same with the content of the file `source`, copied in one pass.
  Status add_file_from(const std::string& rel_path, const std::string& source);

  // From now until publish(), digests the files a producer writes directly
  // into dir() (not its subdirectories) on up to hash_threads background
  // threads, chunk by chunk as they grow, so publish() reads only their last
  // chunks. For a
  // producer that writes each file once, front to back, like CRIU; call it
  // before the producer starts. Idempotent.
  void hash_while_written();
  // Chunks the background hasher has digested so far (0 without one).
  std::uint64_t chunks_hashed_while_written() const {
    return hasher_ ? hasher_->chunks_hashed() : 0;
  }

  // Hashes and fsyncs every file, writes manifest.json, and renames the
  // directory to <root>/<migration-uid>/<container>/. AlreadyExists (reason
  // SnapshotExists) when that exists; ResourceExhausted (reason
  // SnapshotStoreFull) on a full disk. On any failure the staging directory
  // is gone and nothing was published. Once only.
  Result<Manifest> publish();

 private:
  friend class SnapshotStore;
  SnapshotWriter(std::string root, StoreOptions options, SnapshotMeta meta, std::string dir,
                 int lock_fd);
  Result<Manifest> publish_steps(bool* created_parent);
  Status add_file_impl(const std::string& rel_path, int source_fd, std::string_view data);

  std::string root_;
  StoreOptions options_;
  SnapshotMeta meta_;
  std::string dir_;
  SnapshotLease staging_lock_;
  bool done_ = false;                // published, or failed and cleaned up
  std::vector<ManifestFile> added_;  // hashed by add_file*
  std::unique_ptr<BackgroundHasher> hasher_;
};

struct RetentionPolicy {
  // Published snapshots, and abandoned staging directories, older than this go.
  std::chrono::seconds max_age{std::chrono::hours(24 * 7)};
  // Then the oldest published migrations go until the rest fit.
  std::uint64_t max_total_bytes = UINT64_MAX;
};

struct RetentionReport {
  struct Removed {
    std::string migration_uid;
    std::uint64_t bytes = 0;
    std::string why;  // "age" or "size"
  };
  std::vector<Removed> removed;
  std::vector<std::string> in_use;  // would have gone, but were locked
  std::uint64_t staging_removed = 0;
  std::uint64_t bytes_remaining = 0;  // published bytes after the run
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string root, StoreOptions options = {});

  const std::string& root() const { return root_; }
  std::string snapshot_dir(const std::string& migration_uid, const std::string& container) const;

  // Starts a snapshot for meta.binding's migration and container. Fails fast
  // with AlreadyExists when that snapshot is already published, and with
  // InvalidArgument when the binding is incomplete or a name is unsafe.
  Result<std::unique_ptr<SnapshotWriter>> begin(const SnapshotMeta& meta);

  // Opens and verifies a published snapshot for restore into `expected`
  // (namespace, pod name, pod uid and container must all be set). Failures:
  //   NotFound            SnapshotNotFound, SnapshotManifestMissing
  //   DataLoss            SnapshotManifestInvalid, SnapshotFileMissing,
  //                       SnapshotFileSizeMismatch, SnapshotChecksumMismatch,
  //                       SnapshotUnlistedFile
  //   Unsupported         SnapshotFormatUnsupported
  //   FailedPrecondition  SnapshotBindingMismatch
  //   NotFound            SnapshotNotGranted (bound to a pod not known yet)
  // With `defer`, the checksums of the files it picks are left to the
  // caller (see DeferChecksums).
  Result<VerifiedSnapshot> open(const std::string& migration_uid, const std::string& container,
                                const Binding& expected, Verify level,
                                const DeferChecksums& defer = nullptr) const;

  // Names the pod that may restore a migration's snapshots published with
  // no pod uid in their binding (the replacement an owner created after
  // the source was gone). Written by the agent from what the API server
  // says, never by a tenant (root-only, like the snapshots). The first
  // grant stands: another pod gets AlreadyExists (SnapshotAlreadyGranted).
  Status grant(const std::string& migration_uid, const Grant& to) const;
  // NotFound (SnapshotNotGranted) until grant().
  Result<Grant> read_grant(const std::string& migration_uid) const;

  // Removes every snapshot of a migration, and its grant. Unavailable (reason SnapshotInUse)
  // while a reader holds it; OK when there is nothing to remove.
  Status remove(const std::string& migration_uid) const;

  // Removes old and excess published migrations (oldest first, whole
  // migrations, never one in use), abandoned staging directories older than
  // max_age, and leftovers of interrupted removals.
  Result<RetentionReport> enforce_retention(const RetentionPolicy& policy) const;

 private:
  std::string root_;
  StoreOptions options_;
};

}  // namespace ferry::store
