#include "store/hashing.h"

#include <blake3.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

#include "store/mapped_read.h"
#include "store/store_fs.h"

namespace ferry::store {
namespace {

using internal::errno_status;
using internal::UniqueFd;

// Large enough that syscall overhead is noise next to hashing, small enough
// to stay in L2 while the digest reads it.
constexpr std::size_t kReadBytes = 1 << 20;

std::string to_hex(const unsigned char* data, unsigned len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size_t{2} * len, '\0');
  for (size_t i = 0; i < len; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

// Reads [offset, offset + length) of `fd` into `digest`. Returns the bytes
// read; fewer than asked (the file ended) is the caller's to judge, and so
// is `stop`, checked between reads. A range of a read buffer or more is read
// through a mapping (mapped_read.h), with read(2) as the fallback where the
// file cannot be mapped; callers pass lengths they know from their own stat.
Result<std::uint64_t> hash_range(int fd, std::uint64_t offset, std::uint64_t length,
                                 Digester& digest, std::vector<char>& buf, const std::string& what,
                                 const std::atomic<bool>* stop = nullptr) {
  if (length >= buf.size()) {
    auto mapped = read_mapped(fd, offset, length,
                              [](void* d, const char* data, std::size_t n) {
                                static_cast<Digester*>(d)->update(data, n);
                              },
                              &digest, what, {.piece_bytes = buf.size(), .stop = stop});
    if (mapped.ok() || mapped.status().reason() != kMappingUnavailable) return mapped;
  }
  std::uint64_t done = 0;
  while (done < length && (stop == nullptr || !stop->load())) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), length - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, "read " + what);
    if (n == 0) break;
    digest.update(buf.data(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
  }
  return done;
}

Result<UniqueFd> open_regular(const std::string& full, struct stat* st) {
  UniqueFd fd(::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "open " + full);
  if (::fstat(fd.get(), st) != 0) return errno_status(errno, "stat " + full);
  if (!S_ISREG(st->st_mode)) return invalid_argument(full + " is not a regular file");
  return fd;
}

// Runs fn(worker, i) for i in 0..n-1 on up to `threads` workers (the
// caller's thread is worker 0) and `late` more that first wait at `gate`
// (HashOptions::late_threads); `worker` < `threads` + `late` lets fn keep
// per-worker state such as a read buffer. fn must not throw.
void parallel_for(std::size_t n, unsigned threads, unsigned late, LateStart* gate,
                  const std::function<void(unsigned, std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  auto worker = [&](unsigned w) {
    for (std::size_t i; (i = next.fetch_add(1)) < n;) fn(w, i);
  };
  auto start = [](std::vector<std::thread>& pool, auto&& body) {
    try {
      pool.emplace_back(std::forward<decltype(body)>(body));
    } catch (const std::system_error&) {
      return false;  // fewer threads is slower, not wrong
    }
    return true;
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads && t < n; ++t) {
    if (!start(pool, [&worker, t] { worker(t); })) break;
  }
  std::vector<std::thread> late_pool;
  if (gate != nullptr) {
    for (unsigned t = 0; t < late && threads + t < n; ++t) {
      const unsigned w = threads + t;
      if (!start(late_pool, [&worker, gate, w] {
            if (gate->wait()) worker(w);
          })) {
        break;
      }
    }
  }
  worker(0);
  for (auto& t : pool) t.join();
  if (gate != nullptr) gate->close();  // nothing is left to claim
  for (auto& t : late_pool) t.join();
}

}  // namespace

std::uint64_t chunk_count(std::uint64_t size, std::uint64_t chunk_bytes) {
  if (chunk_bytes == 0) return 1;
  return std::max<std::uint64_t>(1, (size + chunk_bytes - 1) / chunk_bytes);
}

std::string_view digest_algorithm_name(DigestAlgorithm algorithm) {
  switch (algorithm) {
    case DigestAlgorithm::kSha256:
      return "sha256";
    case DigestAlgorithm::kBlake3:
      return "blake3";
  }
  return "unknown";
}

std::optional<DigestAlgorithm> parse_digest_algorithm(std::string_view name) {
  for (auto a : {DigestAlgorithm::kSha256, DigestAlgorithm::kBlake3}) {
    if (name == digest_algorithm_name(a)) return a;
  }
  return std::nullopt;
}

struct Digester::State {
  EVP_MD_CTX* evp = nullptr;  // SHA-256
  blake3_hasher blake3{};
  ~State() { EVP_MD_CTX_free(evp); }
};

Digester::Digester(DigestAlgorithm algorithm)
    : algorithm_(algorithm), state_(std::make_unique<State>()) {
  if (algorithm_ == DigestAlgorithm::kBlake3) {
    blake3_hasher_init(&state_->blake3);
    return;
  }
  state_->evp = EVP_MD_CTX_new();
  // Allocation failure here is not an expected failure: nothing can proceed.
  [[maybe_unused]] int ok = EVP_DigestInit_ex(state_->evp, EVP_sha256(), nullptr);
  assert(ok == 1);
}

Digester::~Digester() = default;

void Digester::update(const void* data, std::size_t size) {
  if (algorithm_ == DigestAlgorithm::kBlake3) {
    blake3_hasher_update(&state_->blake3, data, size);
  } else {
    EVP_DigestUpdate(state_->evp, data, size);
  }
}

std::string Digester::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (algorithm_ == DigestAlgorithm::kBlake3) {
    len = BLAKE3_OUT_LEN;  // 32 bytes, its default and full-strength length
    blake3_hasher_finalize(&state_->blake3, md, len);
  } else {
    EVP_DigestFinal_ex(state_->evp, md, &len);
  }
  return to_hex(md, len);
}

Result<std::vector<FileDigest>> hash_files(const std::string& dir,
                                           const std::vector<HashTarget>& targets,
                                           DigestAlgorithm algorithm, const HashOptions& options) {
  // Plan: every chunk still to hash is one piece of work, largest files
  // first so that no big file starts last and finishes alone.
  struct Piece {
    std::size_t target;
    std::uint64_t chunk;  // index; whole-file pieces use 0
  };
  std::vector<FileDigest> out(targets.size());
  std::vector<std::optional<Status>> failed(targets.size());
  std::vector<Piece> pieces;
  std::vector<std::size_t> order(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    order[i] = i;
    const HashTarget& t = targets[i];
    const std::string full = dir + "/" + t.path;
    struct stat st {};
    out[i].path = t.path;
    if (::lstat(full.c_str(), &st) != 0) {
      failed[i] = errno_status(errno, "stat " + full);
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      failed[i] = invalid_argument(full + " is not a regular file");
      continue;
    }
    out[i].size = static_cast<std::uint64_t>(st.st_size);
    const std::uint64_t count = chunk_count(out[i].size, t.chunk_bytes);
    bool shrank = false;
    for (std::uint64_t c = count; c < t.progress.size(); ++c) {
      shrank = shrank || !t.progress[c].digest.empty() || t.progress[c].partial;
    }
    if (shrank) {
      failed[i] =
          Status(Code::kDataLoss, full + " shrank while it was hashed", "SnapshotFileSizeMismatch");
      continue;
    }
    out[i].digests.resize(count);
    // A finished digest is taken as it is: progress comes from the
    // BackgroundHasher of the same writer, which uses the same algorithm.
    for (std::uint64_t c = 0; c < count && c < t.progress.size(); ++c) {
      out[i].digests[c] = t.progress[c].digest;
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return out[a].size > out[b].size; });
  for (std::size_t i : order) {
    if (failed[i]) continue;
    for (std::uint64_t c = 0; c < out[i].digests.size(); ++c) {
      if (out[i].digests[c].empty()) pieces.push_back({i, c});
    }
  }

  std::vector<std::optional<Status>> piece_failed(pieces.size());
  const unsigned threads =
      options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  const unsigned late = options.late_start != nullptr ? options.late_threads : 0;
  std::vector<std::vector<char>> buffers(threads + late);  // one per worker, made on first use
  parallel_for(
      pieces.size(), threads, late, options.late_start, [&](unsigned worker, std::size_t p) {
        const Piece& piece = pieces[p];
        const HashTarget& t = targets[piece.target];
        const std::string full = dir + "/" + t.path;
        try {
          struct stat st {};
          auto fd = open_regular(full, &st);
          if (!fd.ok()) {
            piece_failed[p] = fd.status();
            return;
          }
          std::vector<char>& buf = buffers[worker];
          if (buf.empty()) buf.resize(kReadBytes);
          // The chunk may be partly hashed already.
          const ChunkProgress* known =
              piece.chunk < t.progress.size() && t.progress[piece.chunk].partial &&
                      t.progress[piece.chunk].partial->algorithm() == algorithm
                  ? &t.progress[piece.chunk]
                  : nullptr;
          std::shared_ptr<Digester> digest =
              known ? known->partial : std::make_shared<Digester>(algorithm);
          const std::uint64_t skip = known ? known->bytes : 0;
          if (t.chunk_bytes == 0) {
            // To the end as it was at open; a file that grows later is not a snapshot's.
            const auto size = static_cast<std::uint64_t>(st.st_size);
            auto n = hash_range(fd->get(), skip, size - std::min(size, skip), *digest, buf, full);
            if (!n.ok()) {
              piece_failed[p] = n.status();
              return;
            }
            out[piece.target].size = skip + *n;  // what was read is what the digest covers
          } else {
            const std::uint64_t size = out[piece.target].size;
            const std::uint64_t offset = piece.chunk * t.chunk_bytes;
            const std::uint64_t length = std::min(t.chunk_bytes, size - std::min(size, offset));
            if (skip > length) {
              piece_failed[p] = Status(Code::kDataLoss, full + " shrank while it was hashed",
                                       "SnapshotFileSizeMismatch");
              return;
            }
            auto n = hash_range(fd->get(), offset + skip, length - skip, *digest, buf, full);
            if (!n.ok()) {
              piece_failed[p] = n.status();
              return;
            }
            if (*n != length - skip || static_cast<std::uint64_t>(st.st_size) != size) {
              piece_failed[p] = Status(Code::kDataLoss, full + " changed size while it was hashed",
                                       "SnapshotFileSizeMismatch");
              return;
            }
          }
          out[piece.target].digests[piece.chunk] = digest->hex_digest();
        } catch (const std::exception& e) {  // bad_alloc: no exception leaves a thread
          piece_failed[p] = internal_error("hash " + full + ": " + e.what());
        }
      });
  for (std::size_t p = 0; p < pieces.size(); ++p) {
    auto& slot = failed[pieces[p].target];
    if (piece_failed[p] && !slot) slot = std::move(piece_failed[p]);
  }

  if (options.make_private || options.fsync) {
    parallel_for(targets.size(), threads, 0, nullptr, [&](unsigned, std::size_t i) {
      if (failed[i]) return;
      const std::string full = dir + "/" + targets[i].path;
      struct stat st {};
      auto fd = open_regular(full, &st);
      if (!fd.ok()) {
        failed[i] = fd.status();
      } else if (options.make_private && (st.st_mode & 07777) != 0600 &&
                 ::fchmod(fd->get(), 0600) != 0) {
        failed[i] = errno_status(errno, "chmod 0600 " + full);
      } else if (options.fsync && ::fsync(fd->get()) != 0) {
        failed[i] = errno_status(errno, "fsync " + full);
      }
    });
  }
  for (auto& f : failed) {
    if (f) return *f;
  }
  return out;
}

unsigned cpus_beside_criu() {
  const unsigned cpus = std::thread::hardware_concurrency();  // 0: unknown
  return cpus > 1 ? cpus - 1 : 1;
}

// ---- BackgroundHasher -----------------------------------------------------

BackgroundHasher::BackgroundHasher(std::string dir, DigestAlgorithm algorithm,
                                   std::uint64_t chunk_bytes, unsigned threads)
    : dir_(std::move(dir)),
      algorithm_(algorithm),
      chunk_bytes_(std::max<std::uint64_t>(1, chunk_bytes)) {
  if (threads == 0) threads = cpus_beside_criu();
  for (unsigned t = 0; t < threads; ++t) {
    try {
      threads_.emplace_back([this] { run(); });
    } catch (const std::system_error&) {
      if (t == 0) throw;  // none at all is a failure; fewer is only slower
      break;
    }
  }
}

BackgroundHasher::~BackgroundHasher() {
  if (!threads_.empty()) (void)finish();
}

std::map<std::string, BackgroundHasher::Digested> BackgroundHasher::finish() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();  // each releases its claim first
  threads_.clear();
  std::map<std::string, Digested> done;
  for (auto& [name, file] : files_) {
    Digested& chunks = file.chunks;
    while (!chunks.empty() && chunks.back().digest.empty() && !chunks.back().partial) {
      chunks.pop_back();
    }
    if (!chunks.empty()) done.emplace(name, std::move(chunks));
  }
  files_.clear();
  return done;
}

void BackgroundHasher::run() {
  std::vector<char> buf;
  for (;;) {
    bool busy = false;
    try {
      busy = hash_ready_chunks(buf);
    } catch (const std::exception&) {
      // Out of memory here only loses this reader: publish reads what is left.
      return;
    }
    std::unique_lock lock(mu_);
    if (stop_) return;
    // Poll: a file grows by a chunk in tens of milliseconds at CRIU's speed.
    if (!busy) wake_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stop_.load(); });
    if (stop_) return;
  }
}

bool BackgroundHasher::hash_ready_chunks(std::vector<char>& buf) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir_.c_str()), ::closedir);
  if (!d) return false;
  bool hashed = false;
  while (dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::lstat((dir_ + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    while (auto c = claim(name, st.st_ino, static_cast<std::uint64_t>(st.st_size))) {
      const std::uint64_t before = c->progress.bytes;
      hash_claim(*c, buf);
      const bool progressed = c->progress.bytes > before;
      hashed = hashed || progressed;
      release(std::move(*c));
      if (stop_) return hashed;
      if (!progressed) break;  // unreadable or replaced: the next pass tries again
    }
  }
  return hashed;
}

std::optional<BackgroundHasher::Claim> BackgroundHasher::claim(const std::string& name,
                                                               std::uint64_t inode,
                                                               std::uint64_t size) {
  std::lock_guard lock(mu_);
  if (stop_) return std::nullopt;
  FileProgress& f = files_[name];
  if (f.inode != inode) {
    // A new file under this name (or the first sight of it). Its old
    // progress goes; readers still holding a chunk of it discard theirs.
    f = FileProgress{.inode = inode, .generation = ++generations_, .chunks = {}, .held = {}};
  }
  for (std::uint64_t c = 0; c * chunk_bytes_ < size; ++c) {
    if (c >= f.chunks.size()) {
      f.chunks.resize(c + 1);
      f.held.resize(c + 1);
    }
    const std::uint64_t end = std::min(size, (c + 1) * chunk_bytes_);
    if (f.held[c] || !f.chunks[c].digest.empty() || end - c * chunk_bytes_ <= f.chunks[c].bytes) {
      continue;
    }
    f.held[c] = true;
    return Claim{.name = name,
                 .inode = inode,
                 .generation = f.generation,
                 .chunk = c,
                 .end = end,
                 .progress = std::move(f.chunks[c])};
  }
  return std::nullopt;
}

void BackgroundHasher::hash_claim(Claim& c, std::vector<char>& buf) {
  const std::string full = dir_ + "/" + c.name;
  UniqueFd fd(::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || st.st_ino != c.inode) return;
  if (buf.empty()) buf.resize(kReadBytes);
  if (!c.progress.partial) c.progress.partial = std::make_shared<Digester>(algorithm_);
  const std::uint64_t start = c.chunk * chunk_bytes_;
  // Bytes below the size seen are written (CRIU writes each file once,
  // front to back).
  if (start + c.progress.bytes < c.end && !stop_) {
    auto n = hash_range(fd.get(), start + c.progress.bytes, c.end - start - c.progress.bytes,
                        *c.progress.partial, buf, full, &stop_);
    if (n.ok() && *n == 0 && stop_) return;  // stopped before the first byte: keep what was done
    if (!n.ok() || *n == 0) {                // publish reads this chunk again
      c.progress = ChunkProgress{};
      return;
    }
    c.progress.bytes += *n;
    bytes_hashed_.fetch_add(*n);
  }
  if (c.progress.bytes == chunk_bytes_) {
    c.progress.digest = c.progress.partial->hex_digest();
    c.progress.partial.reset();
    chunks_hashed_.fetch_add(1);
  }
}

void BackgroundHasher::release(Claim c) {
  std::lock_guard lock(mu_);
  auto it = files_.find(c.name);
  if (it == files_.end() || it->second.generation != c.generation) return;  // replaced meanwhile
  it->second.chunks[c.chunk] = std::move(c.progress);
  it->second.held[c.chunk] = false;
}

}  // namespace ferry::store
