#include "checkpoint/criu_stats.h"

#include <cstring>
#include <fstream>
#include <iterator>

namespace ferry::checkpoint {
namespace {

constexpr uint32_t kImgCommonMagic = 0x54564319;   // criu/include/magic.h
constexpr uint32_t kImgServiceMagic = 0x55105940;  // stats images carry this head
constexpr uint32_t kStatsMagic = 0x57093306;
// stats_entry.dump = 1; in dump_stats_entry: pages_written = 7, pages_lazy = 9.
constexpr uint64_t kDumpField = 1, kPagesWrittenField = 7, kPagesLazyField = 9;

// A protobuf wire-format reader over one message.
class Wire {
 public:
  explicit Wire(std::string_view data) : data_(data) {}
  bool done() const { return at_ == data_.size(); }
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && at_ < data_.size(); shift += 7) {
      const auto byte = static_cast<uint8_t>(data_[at_++]);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool bytes(std::string_view& out) {
    uint64_t n = 0;
    if (!varint(n) || n > data_.size() - at_) return false;
    out = data_.substr(at_, n);
    at_ += n;
    return true;
  }
  bool skip(uint64_t wire_type) {
    uint64_t ignored = 0;
    std::string_view ignored_bytes;
    switch (wire_type) {
      case 0:
        return varint(ignored);
      case 1:
        return advance(8);
      case 2:
        return bytes(ignored_bytes);
      case 5:
        return advance(4);
      default:
        return false;  // groups (3, 4) are not in CRIU's images
    }
  }

 private:
  bool advance(size_t n) {
    if (n > data_.size() - at_) return false;
    at_ += n;
    return true;
  }
  std::string_view data_;
  size_t at_ = 0;
};

uint32_t u32_at(std::string_view s, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, s.data() + at, sizeof v);  // CRIU writes host order (x86-64: LE)
  return v;
}

}  // namespace

Result<CriuDumpStats> parse_criu_dump_stats(std::string_view image) {
  auto bad = [](const std::string& why) {
    return invalid_argument("CRIU stats-dump image: " + why);
  };
  size_t at = 0;
  if (image.size() >= 4 &&
      (u32_at(image, 0) == kImgServiceMagic || u32_at(image, 0) == kImgCommonMagic)) {
    at = 4;
  }
  if (image.size() < at + 8 || u32_at(image, at) != kStatsMagic) return bad("no stats magic");
  const uint32_t size = u32_at(image, at + 4);
  at += 8;
  if (size > image.size() - at) return bad("truncated");
  Wire entry(image.substr(at, size));
  CriuDumpStats stats;
  bool found = false;
  while (!entry.done()) {
    uint64_t key = 0;
    if (!entry.varint(key)) return bad("malformed entry");
    if (key >> 3 != kDumpField || (key & 7) != 2) {
      if (!entry.skip(key & 7)) return bad("malformed entry");
      continue;
    }
    std::string_view dump;
    if (!entry.bytes(dump)) return bad("malformed dump entry");
    found = true;
    Wire fields(dump);
    while (!fields.done()) {
      uint64_t k = 0, value = 0;
      if (!fields.varint(k)) return bad("malformed dump entry");
      if ((k & 7) != 0) {
        if (!fields.skip(k & 7)) return bad("malformed dump entry");
        continue;
      }
      if (!fields.varint(value)) return bad("malformed dump entry");
      if (k >> 3 == kPagesWrittenField) stats.pages_written = value;
      if (k >> 3 == kPagesLazyField) stats.pages_lazy = value;
    }
  }
  if (!found) return bad("no dump statistics (a restore's?)");
  return stats;
}

Result<CriuDumpStats> read_criu_dump_stats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("CRIU wrote no " + path + " (the dump did not end well?)");
  std::string data{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  auto stats = parse_criu_dump_stats(data);
  if (!stats.ok()) return stats.status().with_context(path);
  return stats;
}

}  // namespace ferry::checkpoint
