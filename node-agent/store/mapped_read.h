// Reading a snapshot file through a read-only mapping instead of read(2),
// for the digests: the hash then reads the page cache itself, with no copy
// into a buffer first, about a quarter less CPU per byte (session 17,
// bench/results/engine.md). Every byte of a migration is hashed twice, once
// on each node, beside CRIU; on a 2-vCPU guest whose vCPUs share a core,
// that CPU is taken from CRIU's own dump and restore.
//
// A mapped file that shrinks under its reader (shared storage, a damaged or
// replaced snapshot) raises SIGBUS on the next access. Here that fault ends
// the read with an error, in the faulting thread only, instead of killing
// the agent or ferry-runc. Any other SIGBUS goes where it went before.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "status/status.h"

namespace ferry::store {

// Receives the mapped bytes piece by piece. It runs inside the fault guard
// and a fault leaves it by siglongjmp, so it must only compute: no locks,
// no allocation, nothing with a destructor (a digest update).
using MappedConsumer = void (*)(void* context, const char* data, std::size_t size);

struct MappedReadOptions {
  std::size_t piece_bytes = 1 << 20;         // at most this many bytes per call of consume
  const std::atomic<bool>* stop = nullptr;   // checked between pieces: stop early
  std::function<void()> after_map_for_test;  // runs once the range is mapped
};

// Passes [offset, offset + length) of `fd`, clamped to the file's size, to
// `consume`, and returns how many bytes it passed. Errors: DataLoss with
// reason SnapshotFileSizeMismatch when the file lost mapped bytes meanwhile
// (the consumer's state is then undefined: discard it); reason
// kMappingUnavailable when the file cannot be mapped (a filesystem without
// mmap, no address space left): read it with read(2) instead; fstat's errno.
Result<std::uint64_t> read_mapped(int fd, std::uint64_t offset, std::uint64_t length,
                                  MappedConsumer consume, void* context, const std::string& what,
                                  const MappedReadOptions& options = {});

inline constexpr const char* kMappingUnavailable = "MappingUnavailable";

}  // namespace ferry::store
