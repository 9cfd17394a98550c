#include "checkpoint/criu_stats.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace ferry::checkpoint {
namespace {

std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    if (v != 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (v != 0);
  return out;
}
std::string u32(uint32_t v) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &v, 4);
  return out;
}
std::string field_varint(uint32_t field, uint64_t v) {
  return varint(field << 3) + varint(v);
}
std::string field_bytes(uint32_t field, const std::string& b) {
  return varint((field << 3) | 2) + varint(b.size()) + b;
}
// CRIU's framing: IMG_SERVICE_MAGIC, STATS_MAGIC, the entry's length, the entry.
std::string image(const std::string& entry) {
  return u32(0x55105940) + u32(0x57093306) + u32(static_cast<uint32_t>(entry.size())) + entry;
}

// A dump_stats_entry as CRIU 4.2 writes it: times, page counts, a 64-bit
// page count larger than 32 bits, optional fields Ferry does not read.
TEST(CriuStatsTest, ReadsTheWrittenAndLazyPagesOfADump) {
  const std::string dump =
      field_varint(1, 5) + field_varint(2, 1200) + field_varint(3, 40) + field_varint(4, 30) +
      field_varint(5, 300000) + field_varint(6, 0) + field_varint(7, 37) + field_varint(8, 0) +
      field_varint(9, (uint64_t{1} << 33) + 7) + field_varint(10, 3) + field_varint(11, 9);
  auto stats = parse_criu_dump_stats(image(field_bytes(1, dump)));
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->pages_written, 37u);
  EXPECT_EQ(stats->pages_lazy, (uint64_t{1} << 33) + 7);
}

TEST(CriuStatsTest, RefusesWhatIsNotADumpsStatistics) {
  EXPECT_FALSE(parse_criu_dump_stats("").ok());
  EXPECT_FALSE(parse_criu_dump_stats(u32(0x55105940) + u32(0x12345678) + u32(0)).ok())
      << "another image";
  const std::string restore = field_bytes(2, field_varint(1, 4));
  EXPECT_FALSE(parse_criu_dump_stats(image(restore)).ok()) << "a restore's statistics";
  std::string truncated = image(field_bytes(1, field_varint(9, 300)));
  truncated.pop_back();
  EXPECT_FALSE(parse_criu_dump_stats(truncated).ok());
  // A length running past the entry.
  EXPECT_FALSE(parse_criu_dump_stats(image(varint((1 << 3) | 2) + varint(50) + "xy")).ok());
}

TEST(CriuStatsTest, AMissingFileSaysWhere) {
  auto stats = read_criu_dump_stats("/nonexistent/stats-dump");
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("/nonexistent/stats-dump"), std::string::npos);
}

}  // namespace
}  // namespace ferry::checkpoint
