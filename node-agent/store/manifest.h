// What a snapshot is and whom it belongs to, written next to the CRIU images
// as manifest.json. The restoring node trusts nothing it has not checked: the
// manifest lists every file with its size and a cryptographic digest (BLAKE3
// or SHA-256, named in the manifest) so a truncated copy or
// a flipped bit on shared storage is caught before CRIU reads it, records the
// node facts a restore depends on (CRIU, kernel, architecture, runtime,
// image), and names the pod the snapshot is bound to so it can never be
// restored into another pod. The format is versioned; readers ignore fields
// they do not know and refuse versions they do not.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "status/status.h"
#include "store/hashing.h"

namespace ferry::store {

// 2: large files carry one SHA-256 per chunk (sha256_chunks, chunk_bytes).
// 3: the digest algorithm is named (digest_algorithm: blake3 or sha256), and
//    files list `digest` or `digest_chunks`. Versions 1 and 2 are SHA-256.
inline constexpr int kManifestFormatVersion = 3;
inline constexpr int kOldestManifestFormatVersion = 1;  // still read
inline constexpr char kManifestFile[] = "manifest.json";

// The pod and migration a snapshot may be restored into.
struct Binding {
  std::string namespace_name;
  std::string pod_name;
  std::string pod_uid;
  std::string container_name;
  std::string migration_uid;

  bool operator==(const Binding&) const = default;
};

enum class MigrationMode { kCold, kPostCopy, kPreCopy };
std::string_view mode_name(MigrationMode mode);  // "Cold", "PostCopy", "PreCopy"

struct RuntimeInfo {
  std::string name;  // "runc", "crun"
  std::string version;
};

struct ImageInfo {
  std::string reference;  // as in the pod spec
  std::string digest;     // "sha256:..." the container actually runs
};

// Everything the writer knows before the files exist.
struct SnapshotMeta {
  Binding binding;
  MigrationMode mode = MigrationMode::kCold;
  std::string criu_version;
  std::string kernel;        // uname release; filled in by the store when empty
  std::string architecture;  // uname machine; filled in by the store when empty
  RuntimeInfo runtime;
  ImageInfo image;
  std::vector<std::string> mount_destinations;
};

struct ManifestFile {
  std::string path;  // relative to the snapshot directory, '/'-separated
  std::uint64_t size = 0;
  // Exactly one of the two: the digest of the whole file, or (files larger
  // than the manifest's chunk_bytes) one per chunk, in order. Lowercase hex,
  // by the manifest's digest_algorithm.
  std::string digest;
  std::vector<std::string> digest_chunks;
  std::uint32_t mode = 0600;
};

struct Manifest {
  int format_version = kManifestFormatVersion;
  std::chrono::system_clock::time_point created;
  SnapshotMeta meta;
  std::vector<ManifestFile> files;  // sorted by path
  std::uint64_t chunk_bytes = 0;    // size of the chunks of digest_chunks
  DigestAlgorithm digest_algorithm = kDefaultDigestAlgorithm;

  std::uint64_t total_bytes() const;
};

std::string manifest_to_json(const Manifest& manifest);
// DataLoss (reason SnapshotManifestInvalid) for text that is not a manifest,
// Unsupported (reason SnapshotFormatUnsupported) for another format version
// or a digest algorithm this agent does not know.
Result<Manifest> manifest_from_json(const std::string& text);

// RFC 3339 in UTC with nanoseconds, and back.
std::string format_time(std::chrono::system_clock::time_point t);
Result<std::chrono::system_clock::time_point> parse_time(const std::string& text);

}  // namespace ferry::store
