#include "store/hashing.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <numeric>
#include <optional>
#include <thread>

#include "store/store_fs.h"

namespace ferry::store {
namespace {

// Large enough that syscall overhead is noise next to hashing, small enough
// to stay in L2 while SHA-256 reads it.
constexpr std::size_t kChunk = 1 << 20;

std::string to_hex(const unsigned char* data, unsigned len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size_t{2} * len, '\0');
  for (size_t i = 0; i < len; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

Result<FileDigest> hash_one(const std::string& dir, const std::string& path,
                            const HashOptions& options, std::vector<char>& buf) {
  std::string full = dir + "/" + path;
  internal::UniqueFd fd(::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return internal::errno_status(errno, "open " + full);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return internal::errno_status(errno, "stat " + full);
  if (!S_ISREG(st.st_mode)) return invalid_argument(full + " is not a regular file");
  if (options.make_private && (st.st_mode & 07777) != 0600 && ::fchmod(fd.get(), 0600) != 0) {
    return internal::errno_status(errno, "chmod 0600 " + full);
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 sha;
  std::uint64_t size = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return internal::errno_status(errno, "read " + full);
    if (n == 0) break;
    sha.update(buf.data(), static_cast<std::size_t>(n));
    size += static_cast<std::uint64_t>(n);
  }
  if (options.fsync && ::fsync(fd.get()) != 0) {
    return internal::errno_status(errno, "fsync " + full);
  }
  return FileDigest{.path = path, .size = size, .sha256 = sha.hex_digest()};
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Allocation failure here is not an expected failure: nothing can proceed.
  [[maybe_unused]] int ok =
      EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
  assert(ok == 1);
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256::update(const void* data, std::size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  return to_hex(md, len);
}

Result<std::vector<FileDigest>> hash_files(const std::string& dir,
                                           const std::vector<std::string>& paths,
                                           const HashOptions& options) {
  std::vector<std::optional<Result<FileDigest>>> results(paths.size());
  // Largest first, so one big page file does not start last and finish alone.
  std::vector<std::size_t> order(paths.size());
  std::iota(order.begin(), order.end(), 0);
  std::vector<std::uint64_t> sizes(paths.size(), 0);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    struct stat st {};
    if (::lstat((dir + "/" + paths[i]).c_str(), &st) == 0) {
      sizes[i] = static_cast<std::uint64_t>(st.st_size);
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return sizes[a] > sizes[b]; });

  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    std::vector<char> buf(kChunk);
    for (std::size_t k; (k = next.fetch_add(1)) < order.size();) {
      std::size_t i = order[k];
      try {
        results[i] = hash_one(dir, paths[i], options, buf);
      } catch (const std::exception& e) {  // bad_alloc: no exception leaves a thread
        results[i] = Result<FileDigest>(internal_error("hash " + paths[i] + ": " + e.what()));
      }
    }
  };
  unsigned threads =
      options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<std::size_t>(threads, paths.size()));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // fewer threads is slower, not wrong
    }
  }
  worker();
  for (auto& t : pool) t.join();

  std::vector<FileDigest> out;
  out.reserve(paths.size());
  for (auto& r : results) {
    if (!r->ok()) return r->status();
    out.push_back(std::move(**r));
  }
  return out;
}

}  // namespace ferry::store
