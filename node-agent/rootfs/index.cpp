#include <nlohmann/json.hpp>
#include <set>

#include "encoding/base64.h"
#include "rootfs/diff.h"
#include "rootfs/safe_fs.h"

namespace ferry::rootfs {
namespace {

using nlohmann::json;

constexpr std::pair<EntryType, const char*> kTypeNames[] = {
    {EntryType::kDirectory, "dir"},     {EntryType::kFile, "file"},
    {EntryType::kSymlink, "symlink"},   {EntryType::kHardlink, "hardlink"},
    {EntryType::kWhiteout, "whiteout"}, {EntryType::kFifo, "fifo"},
    {EntryType::kCharDevice, "char"},   {EntryType::kBlockDevice, "block"},
};

const char* type_name(EntryType type) {
  for (const auto& [t, name] : kTypeNames) {
    if (t == type) return name;
  }
  return "unknown";
}

Status unsafe(const std::string& message) {
  return {Code::kInvalidArgument, "unsafe rootfs diff: " + message, "UnsafeRootfsDiff"};
}

}  // namespace

std::string index_to_json(const DiffIndex& index) {
  json entries = json::array();
  for (const auto& e : index.entries) {
    json j = {{"path", e.path}, {"type", type_name(e.type)}};
    if (e.type != EntryType::kWhiteout && e.type != EntryType::kHardlink) {
      j["mode"] = e.mode;
      j["uid"] = e.uid;
      j["gid"] = e.gid;
      j["mtime_sec"] = e.mtime_sec;
      j["mtime_nsec"] = e.mtime_nsec;
    }
    switch (e.type) {
      case EntryType::kDirectory:
        if (e.opaque) j["opaque"] = true;
        break;
      case EntryType::kFile:
        j["data"] = e.data;
        j["size"] = e.size;
        break;
      case EntryType::kSymlink:
        j["target"] = e.symlink_target;
        break;
      case EntryType::kHardlink:
        j["link_to"] = e.link_to;
        break;
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
        j["rdev"] = e.rdev;
        break;
      case EntryType::kWhiteout:
      case EntryType::kFifo:
        break;
    }
    if (!e.xattrs.empty()) {
      json x = json::object();
      // Values are binary (security.capability is a struct): base64.
      for (const auto& [name, value] : e.xattrs) x[name] = encoding::base64_encode(value);
      j["xattrs"] = std::move(x);
    }
    entries.push_back(std::move(j));
  }
  json doc = {{"format_version", index.format_version}, {"entries", std::move(entries)}};
  return doc.dump(1);
}

Result<DiffIndex> index_from_json(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status(Code::kDataLoss, "rootfs diff index is not valid JSON", "RootfsDiffInvalid");
  }
  DiffIndex index;
  try {
    index.format_version = doc.at("format_version").get<int>();
    if (index.format_version != kDiffFormatVersion) {
      return Status(Code::kUnsupported,
                    "rootfs diff format_version " + std::to_string(index.format_version) +
                        " is not supported (this agent reads version " +
                        std::to_string(kDiffFormatVersion) + ")",
                    "RootfsDiffFormatUnsupported");
    }
    for (const auto& j : doc.at("entries")) {
      DiffEntry e;
      e.path = j.at("path").get<std::string>();
      std::string type = j.at("type").get<std::string>();
      bool known = false;
      for (const auto& [t, name] : kTypeNames) {
        if (type == name) {
          e.type = t;
          known = true;
        }
      }
      if (!known) {
        return Status(Code::kUnsupported,
                      "rootfs diff entry '" + e.path + "' has unknown type '" + type + "'",
                      "RootfsDiffFormatUnsupported");
      }
      e.mode = j.value("mode", 0u);
      e.uid = j.value("uid", 0u);
      e.gid = j.value("gid", 0u);
      e.mtime_sec = j.value("mtime_sec", std::int64_t{0});
      e.mtime_nsec = j.value("mtime_nsec", std::int64_t{0});
      e.opaque = j.value("opaque", false);
      e.data = j.value("data", "");
      e.size = j.value("size", std::uint64_t{0});
      e.symlink_target = j.value("target", "");
      e.link_to = j.value("link_to", "");
      e.rdev = j.value("rdev", std::uint64_t{0});
      if (j.contains("xattrs")) {
        for (const auto& [name, value] : j.at("xattrs").items()) {
          auto decoded = encoding::base64_decode(value.get<std::string>());
          if (!decoded.ok()) {
            return Status(Code::kDataLoss,
                          "rootfs diff entry '" + e.path + "' xattr " + name + ": " +
                              decoded.status().message(),
                          "RootfsDiffInvalid");
          }
          e.xattrs[name] = std::move(*decoded);
        }
      }
      index.entries.push_back(std::move(e));
    }
  } catch (const json::exception& ex) {
    return Status(Code::kDataLoss, std::string("rootfs diff index: ") + ex.what(),
                  "RootfsDiffInvalid");
  }
  return index;
}

Status validate_index(const DiffIndex& index) {
  std::set<std::string> dirs, files, seen;
  for (const auto& e : index.entries) {
    auto parts = internal::split_relative_path(e.path);
    if (!parts.ok()) return unsafe(parts.status().message());
    if (!seen.insert(e.path).second) return unsafe("path '" + e.path + "' appears twice");
    // A parent that is a directory of this diff is one apply has just made a
    // real directory; requiring it rules out paths below a diff's symlink.
    if (parts->size() > 1) {
      std::string parent = e.path.substr(0, e.path.rfind('/'));
      if (!dirs.count(parent)) {
        return unsafe("'" + e.path + "' comes before, or without, its parent directory '" + parent +
                      "' (a symlink or file at '" + parent +
                      "' would be followed out of the rootfs)");
      }
    }
    if ((e.mode & ~07777u) != 0) {
      return unsafe("'" + e.path + "' has mode bits outside 07777");
    }
    switch (e.type) {
      case EntryType::kDirectory:
        dirs.insert(e.path);
        break;
      case EntryType::kFile: {
        auto data = internal::split_relative_path(e.data);
        if (!data.ok()) return unsafe("content of '" + e.path + "': " + data.status().message());
        files.insert(e.path);
        break;
      }
      case EntryType::kSymlink:
        if (e.symlink_target.empty() || e.symlink_target.find('\0') != std::string::npos) {
          return unsafe("symlink '" + e.path + "' has an empty or NUL-containing target");
        }
        break;
      case EntryType::kHardlink:
        if (!files.count(e.link_to)) {
          return unsafe("hard link '" + e.path + "' points to '" + e.link_to +
                        "', which is not an earlier regular file of this diff");
        }
        break;
      case EntryType::kWhiteout:
      case EntryType::kFifo:
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
        break;
    }
  }
  return {};
}

}  // namespace ferry::rootfs
