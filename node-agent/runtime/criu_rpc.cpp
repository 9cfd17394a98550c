#include "runtime/criu_rpc.h"

namespace ferry::runtime::criu_rpc {

namespace {

// Reads a base-128 varint at `pos`; false when the input ends first.
bool read_varint(std::string_view in, size_t& pos, std::uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= in.size()) return false;
    auto byte = static_cast<unsigned char>(in[pos++]);
    value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Calls `on_field(field, wire_type, varint, bytes)` for each field; stops
// quietly at a truncated field. InvalidArgument on an unknown wire type.
template <typename OnField>
Status for_each_field(std::string_view in, OnField on_field) {
  size_t pos = 0;
  while (pos < in.size()) {
    std::uint64_t tag = 0;
    if (!read_varint(in, pos, tag)) return {};
    const auto field = static_cast<std::uint32_t>(tag >> 3);
    const auto wire = static_cast<int>(tag & 7);
    std::uint64_t value = 0;
    std::string_view bytes;
    switch (wire) {
      case 0:
        if (!read_varint(in, pos, value)) return {};
        break;
      case 1:
      case 5: {
        const size_t width = wire == 1 ? 8 : 4;
        if (in.size() - pos < width) return {};
        pos += width;
        break;
      }
      case 2:
        if (!read_varint(in, pos, value) || in.size() - pos < value) return {};
        bytes = in.substr(pos, value);
        pos += value;
        break;
      default:
        return invalid_argument("CRIU RPC message has a field of unknown wire type " +
                                std::to_string(wire));
    }
    on_field(field, wire, value, bytes);
  }
  return {};
}

}  // namespace

Result<Message> decode(std::string_view bytes) {
  Message m;
  bool typed = false;
  Status s = for_each_field(bytes, [&](std::uint32_t field, int wire, std::uint64_t value,
                                       std::string_view sub) {
    if (field == 1 && wire == 0) {
      m.type = static_cast<int>(value);
      typed = true;
    } else if (field == 5 && wire == 2) {  // criu_resp.notify
      (void)for_each_field(sub, [&](std::uint32_t f, int w, std::uint64_t, std::string_view s2) {
        if (f == 1 && w == 2) m.notify_script = std::string(s2);
      });
    }
  });
  if (!s.ok()) return s;
  if (!typed) return invalid_argument("CRIU RPC message without a type");
  return m;
}

Result<std::vector<int>> client_fds(std::string_view request) {
  std::vector<int> fds;
  std::string_view opts;
  Status s = for_each_field(
      request, [&](std::uint32_t field, int wire, std::uint64_t, std::string_view sub) {
        if (field == 2 && wire == 2) opts = sub;  // criu_req.opts
      });
  if (!s.ok()) return s;
  s = for_each_field(
      opts, [&](std::uint32_t field, int wire, std::uint64_t value, std::string_view) {
        // criu_opts: images_dir_fd = 1, work_dir_fd = 17, status_fd = 49 (int32)
        if (wire != 0 || (field != 1 && field != 17 && field != 49)) return;
        const auto fd = static_cast<std::int32_t>(value);  // -1 is sign-extended on the wire
        if (fd >= 0) fds.push_back(fd);
      });
  if (!s.ok()) return s;
  return fds;
}

std::string encode_notify_answer(bool success) {
  // field 1 (varint) = NOTIFY, field 3 (varint) = success
  return std::string{0x08, static_cast<char>(kNotify), 0x18, static_cast<char>(success ? 1 : 0)};
}

}  // namespace ferry::runtime::criu_rpc
