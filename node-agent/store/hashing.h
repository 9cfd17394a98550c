// Digests of snapshot files, the cost that grows with the container's memory.
// BLAKE3 by default (the official C implementation, SIMD on every x86-64
// and arm64 CPU): 4.6 GB/s per core against OpenSSL's SHA-256 at 1.3 GB/s
// with the CPU's SHA extensions on session 12's VM, and every byte is
// hashed twice on a migration's critical path (the source publishes, the
// target verifies; bench/results/engine.md). SHA-256 stays selectable, and
// snapshots written with it are still read. A CRIU image set is one or a few large page files and
// many small ones. A large file is hashed as independent chunks (one digest per chunk, all listed
// in the manifest), so publish and full verification of a single 1 GiB memory image use every core,
// not one. While CRIU is still writing, a BackgroundHasher digests each chunk as soon as it is
// complete, so that publish only reads what was written last. Ranges of
// 1 MiB or more are read through a mapping, not copied (mapped_read.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "status/status.h"

namespace ferry::store {

// Files larger than this get one digest per chunk. 64 MiB: 16 pieces of
// work for a 1 GiB image, and 64 hex digits per 64 MiB in the manifest.
inline constexpr std::uint64_t kDigestChunkBytes = 64u << 20;

// How many digests a file of `size` has when chunked by `chunk_bytes`: at
// least one (an empty file has the digest of nothing).
std::uint64_t chunk_count(std::uint64_t size, std::uint64_t chunk_bytes);

// The cryptographic digest a snapshot's files are listed with.
enum class DigestAlgorithm { kSha256, kBlake3 };
inline constexpr DigestAlgorithm kDefaultDigestAlgorithm = DigestAlgorithm::kBlake3;
std::string_view digest_algorithm_name(DigestAlgorithm algorithm);  // "sha256", "blake3"
std::optional<DigestAlgorithm> parse_digest_algorithm(std::string_view name);

class Digester;

// How many hashing threads to run beside CRIU, which dumps and restores on
// one core: one per CPU but that one, at least one (bench/results/engine.md,
// session 9: a reader that takes CRIU's core lengthens the dump by more
// than it saves at publish).
unsigned cpus_beside_criu();

// What is already known of one chunk of a file before hash_files reads
// it: its digest, or a digest under way over its first `bytes` bytes.
struct ChunkProgress {
  std::string digest;                 // set: the chunk is done
  std::shared_ptr<Digester> partial;  // else, when set: hashed over `bytes`
  std::uint64_t bytes = 0;
};

struct HashTarget {
  std::string path;  // relative to the directory
  // 0: one digest of the whole file, as long as it turns out to be.
  // Otherwise one digest per chunk of this many bytes.
  std::uint64_t chunk_bytes = 0;
  // What was digested already (BackgroundHasher), by chunk from the first;
  // chunks past its end, and empty entries, are read whole. Reading goes on
  // from a partial, which hash_files finishes (consumes).
  std::vector<ChunkProgress> progress;
};

struct FileDigest {
  std::string path;  // as given
  std::uint64_t size = 0;
  // Lowercase hex: one per chunk, or exactly one for a whole file.
  std::vector<std::string> digests;
};

// Where late workers (HashOptions::late_threads) wait before they help:
// until something outside says a core is free for them, or the work is done.
class LateStart {
 public:
  virtual ~LateStart() = default;
  // Blocks until the late workers may start (true) or close() was called
  // (false, then and from then on). Called from several threads at once.
  virtual bool wait() = 0;
  // Ends every wait(), present and future, with false. hash_files calls it
  // once the other workers have finished.
  virtual void close() = 0;
};

struct HashOptions {
  unsigned threads = 0;  // 0: one per CPU
  // More workers, each first waiting at `late_start` and working only if
  // it lets them. A restore's verification runs beside CRIU, which restores
  // on one core; its late worker takes that core once CRIU waits for the
  // verdict, not before. (Until session 18 it ran from the start at nice
  // 19; on a 2-vCPU guest that still cost CRIU's 1 GiB restore 40-70 ms:
  // bench/results/engine.md.) Ignored without `late_start`.
  unsigned late_threads = 0;
  LateStart* late_start = nullptr;
  // Also fsync each file (publish makes the data durable in the same run).
  bool fsync = false;
  // Also chmod each file to 0600 (publish makes every file root-only).
  bool make_private = false;
};

// Hashes `targets` (relative to `dir`) with `algorithm` on `threads`
// threads, chunks of all files interleaved, and returns their digests in the
// same order. Progress made with another algorithm is not used. Errors name
// the file; the first failing target in order wins. A chunked file whose
// size changes meanwhile is an error (its chunks would disagree).
Result<std::vector<FileDigest>> hash_files(const std::string& dir,
                                           const std::vector<HashTarget>& targets,
                                           DigestAlgorithm algorithm,
                                           const HashOptions& options = {});

// An incremental digest, for data hashed while it is written.
class Digester {
 public:
  explicit Digester(DigestAlgorithm algorithm);
  ~Digester();
  Digester(const Digester&) = delete;
  Digester& operator=(const Digester&) = delete;

  DigestAlgorithm algorithm() const { return algorithm_; }
  void update(const void* data, std::size_t size);
  std::string hex_digest();  // finishes; call once

 private:
  struct State;  // OpenSSL's or BLAKE3's, kept out of this header
  DigestAlgorithm algorithm_;
  std::unique_ptr<State> state_;
};

// Digests the regular files directly in `dir` while a producer appends to
// them with `algorithm`, from construction until finish(): every byte once it
// is written, so
// that at the end only the last few milliseconds' writes are left to read.
// It relies on what CRIU does with its image files: each is written once,
// front to back, under its final name. A file rewritten in place would be
// listed with a wrong digest, which the reader's verification refuses: a
// failed restore, never a wrong one.
//
// Up to `threads` readers share the work a chunk at a time, each taking the
// first chunk that has unread bytes and that no other reader holds. So one
// reader follows the producer, and the others only work when it falls
// behind: on a dump of a large image, SHA-256 on one core is slower than
// CRIU's writes, BLAKE3 keeps up (bench/results/engine.md). 0 readers:
// cpus_beside_criu().
class BackgroundHasher {
 public:
  BackgroundHasher(std::string dir, DigestAlgorithm algorithm, std::uint64_t chunk_bytes,
                   unsigned threads = 1);
  ~BackgroundHasher();  // stops, discarding the digests
  BackgroundHasher(const BackgroundHasher&) = delete;
  BackgroundHasher& operator=(const BackgroundHasher&) = delete;

  // What was digested of one file, by chunk (HashTarget::progress).
  using Digested = std::vector<ChunkProgress>;
  // Stops (after the reads in progress) and returns, per file name, what was
  // digested. Once only.
  std::map<std::string, Digested> finish();
  // Chunks digested so far, and bytes read, over all files.
  std::uint64_t chunks_hashed() const { return chunks_hashed_.load(); }
  std::uint64_t bytes_hashed() const { return bytes_hashed_.load(); }

 private:
  struct FileProgress {
    std::uint64_t inode = 0;
    std::uint64_t generation = 0;  // a new inode under the same name starts over
    std::vector<ChunkProgress> chunks;
    std::vector<bool> held;  // by a reader, which has moved its progress out
  };
  struct Claim {
    std::string name;
    std::uint64_t inode = 0;
    std::uint64_t generation = 0;
    std::uint64_t chunk = 0;
    std::uint64_t end = 0;  // file offset up to which the chunk was written
    ChunkProgress progress;
  };

  void run();
  bool hash_ready_chunks(std::vector<char>& buf);  // one pass; true when it hashed something
  std::optional<Claim> claim(const std::string& name, std::uint64_t inode, std::uint64_t size);
  void hash_claim(Claim& claim, std::vector<char>& buf);
  void release(Claim claim);

  std::string dir_;
  DigestAlgorithm algorithm_;
  std::uint64_t chunk_bytes_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  std::map<std::string, FileProgress> files_;  // guarded by mu_
  std::uint64_t generations_ = 0;              // guarded by mu_
  std::atomic<std::uint64_t> chunks_hashed_{0};
  std::atomic<std::uint64_t> bytes_hashed_{0};
  std::vector<std::thread> threads_;
};

}  // namespace ferry::store
