// SHA-256 of snapshot files, the cost that grows with the container's memory.
// A CRIU image set is a few large page files and many small ones; hashing
// them on several threads at once (one file per thread, largest first) keeps
// publish and full verification close to the speed of a single read of the
// data. OpenSSL's EVP SHA-256 uses the CPU's SHA extensions where present.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::store {

struct FileDigest {
  std::string path;  // as given
  std::uint64_t size = 0;
  std::string sha256;  // lowercase hex
};

struct HashOptions {
  unsigned threads = 0;  // 0: one per CPU; never more than there are files
  // Also fsync each file (publish makes the data durable in the same pass).
  bool fsync = false;
  // Also chmod each file to 0600 (publish makes every file root-only).
  bool make_private = false;
};

// Hashes `paths` (relative to `dir`) and returns their digests in the same
// order. Errors name the file; the first failing file in `paths` order wins.
Result<std::vector<FileDigest>> hash_files(const std::string& dir,
                                           const std::vector<std::string>& paths,
                                           const HashOptions& options = {});

// Incremental SHA-256, for data hashed while it is written.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  std::string hex_digest();  // finishes; call once

 private:
  void* ctx_;  // EVP_MD_CTX, kept out of this header
};

}  // namespace ferry::store
