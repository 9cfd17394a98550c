// CRIU's dump statistics: the stats-dump image CRIU writes into its work
// directory when a dump has ended well (criu/stats.c, images/stats.proto).
// Ferry reads it for what no other figure holds: how many pages a PostCopy
// dump served after it published (pages_lazy), which are part of what the
// migration carried. Only the fields Ferry uses are decoded; the format is
// CRIU's image framing (head magic, STATS_MAGIC, a 32-bit length) around
// one protobuf message, read with a minimal decoder rather than a protobuf
// dependency for two integers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "status/status.h"

namespace ferry::checkpoint {

struct CriuDumpStats {
  uint64_t pages_written = 0;  // into the images
  uint64_t pages_lazy = 0;     // left to the page server (PostCopy)
};

// The file's name in CRIU's work directory.
inline constexpr const char* kCriuDumpStatsFile = "stats-dump";

Result<CriuDumpStats> parse_criu_dump_stats(std::string_view image);
Result<CriuDumpStats> read_criu_dump_stats(const std::string& path);

}  // namespace ferry::checkpoint
