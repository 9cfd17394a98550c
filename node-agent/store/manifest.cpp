#include "store/manifest.h"

#include <cctype>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "store/hashing.h"

namespace ferry::store {
namespace {

using nlohmann::json;

Status invalid(const std::string& message) {
  return {Code::kDataLoss, "snapshot manifest is invalid: " + message, "SnapshotManifestInvalid"};
}

}  // namespace

std::string_view mode_name(MigrationMode mode) {
  switch (mode) {
    case MigrationMode::kCold:
      return "Cold";
    case MigrationMode::kPostCopy:
      return "PostCopy";
    case MigrationMode::kPreCopy:
      return "PreCopy";
  }
  return "Unknown";
}

std::uint64_t Manifest::total_bytes() const {
  std::uint64_t total = 0;
  for (const auto& f : files) total += f.size;
  return total;
}

std::string format_time(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  long frac = static_cast<long>(ns % 1'000'000'000);
  if (frac < 0) {
    frac += 1'000'000'000;
    --secs;
  }
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

Result<std::chrono::system_clock::time_point> parse_time(const std::string& text) {
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return invalid_argument("time '" + text + "' is not RFC 3339");
  }
  long long nanos = 0;
  size_t pos = static_cast<size_t>(consumed);
  if (pos < text.size() && text[pos] == '.') {
    int digits = 0;
    for (++pos; pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])); ++pos) {
      if (digits++ < 9) nanos = nanos * 10 + (text[pos] - '0');
    }
    for (; digits < 9; ++digits) nanos *= 10;
  }
  if (pos + 1 != text.size() || text[pos] != 'Z') {
    return invalid_argument("time '" + text + "' is not RFC 3339 UTC ('Z')");
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::time_t secs = ::timegm(&tm);
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(secs) + std::chrono::nanoseconds(nanos)));
}

std::string manifest_to_json(const Manifest& m) {
  json files = json::array();
  for (const auto& f : m.files) {
    json file = {{"path", f.path}, {"size", f.size}, {"mode", f.mode}};
    if (m.format_version >= 3) {
      if (f.digest_chunks.empty()) {
        file["digest"] = f.digest;
      } else {
        file["digest_chunks"] = f.digest_chunks;
      }
    } else if (f.digest_chunks.empty()) {
      // Formats 1-2, SHA-256 by name (only tests write them now, as older
      // agents did; a BLAKE3 manifest written so fails verification).
      file["sha256"] = f.digest;
    } else {
      file["sha256_chunks"] = f.digest_chunks;
    }
    files.push_back(std::move(file));
  }
  const auto& b = m.meta.binding;
  json doc = {
      {"format_version", m.format_version},
      {"created", format_time(m.created)},
      {"mode", mode_name(m.meta.mode)},
      {"binding",
       {{"namespace", b.namespace_name},
        {"pod_name", b.pod_name},
        {"pod_uid", b.pod_uid},
        {"container_name", b.container_name},
        {"migration_uid", b.migration_uid}}},
      {"criu_version", m.meta.criu_version},
      {"kernel", m.meta.kernel},
      {"architecture", m.meta.architecture},
      {"runtime", {{"name", m.meta.runtime.name}, {"version", m.meta.runtime.version}}},
      {"image", {{"reference", m.meta.image.reference}, {"digest", m.meta.image.digest}}},
      {"mount_destinations", m.meta.mount_destinations},
      {"total_bytes", m.total_bytes()},
      {"files", std::move(files)},
  };
  if (m.chunk_bytes != 0) doc["chunk_bytes"] = m.chunk_bytes;
  if (m.format_version >= 3) doc["digest_algorithm"] = digest_algorithm_name(m.digest_algorithm);
  return doc.dump(1) + "\n";
}

Result<Manifest> manifest_from_json(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return invalid("not JSON");
  if (!doc.is_object()) return invalid("not a JSON object");
  Manifest m;
  try {
    if (!doc.contains("format_version")) return invalid("no format_version");
    m.format_version = doc.at("format_version").get<int>();
    if (m.format_version < kOldestManifestFormatVersion ||
        m.format_version > kManifestFormatVersion) {
      return Status(Code::kUnsupported,
                    "snapshot manifest format_version " + std::to_string(m.format_version) +
                        " is not supported by this agent (it reads versions " +
                        std::to_string(kOldestManifestFormatVersion) + " to " +
                        std::to_string(kManifestFormatVersion) + ")",
                    "SnapshotFormatUnsupported");
    }
    auto created = parse_time(doc.at("created").get<std::string>());
    if (!created.ok()) return invalid(created.status().message());
    m.created = *created;
    std::string mode = doc.at("mode").get<std::string>();
    if (mode == "Cold") {
      m.meta.mode = MigrationMode::kCold;
    } else if (mode == "PostCopy") {
      m.meta.mode = MigrationMode::kPostCopy;
    } else if (mode == "PreCopy") {
      m.meta.mode = MigrationMode::kPreCopy;
    } else {
      return invalid("unknown mode '" + mode + "'");
    }
    const json& b = doc.at("binding");
    m.meta.binding = {.namespace_name = b.at("namespace").get<std::string>(),
                      .pod_name = b.at("pod_name").get<std::string>(),
                      .pod_uid = b.at("pod_uid").get<std::string>(),
                      .container_name = b.at("container_name").get<std::string>(),
                      .migration_uid = b.at("migration_uid").get<std::string>()};
    m.meta.criu_version = doc.value("criu_version", "");
    m.meta.kernel = doc.value("kernel", "");
    m.meta.architecture = doc.value("architecture", "");
    if (doc.contains("runtime")) {
      m.meta.runtime = {.name = doc["runtime"].value("name", ""),
                        .version = doc["runtime"].value("version", "")};
    }
    if (doc.contains("image")) {
      m.meta.image = {.reference = doc["image"].value("reference", ""),
                      .digest = doc["image"].value("digest", "")};
    }
    m.meta.mount_destinations = doc.value("mount_destinations", std::vector<std::string>{});
    m.chunk_bytes = doc.value("chunk_bytes", std::uint64_t{0});
    // Versions 1 and 2 are SHA-256 and name their digests after it.
    std::string whole_key = "sha256", chunks_key = "sha256_chunks";
    m.digest_algorithm = DigestAlgorithm::kSha256;
    if (m.format_version >= 3) {
      whole_key = "digest";
      chunks_key = "digest_chunks";
      if (!doc.contains("digest_algorithm")) return invalid("no digest_algorithm");
      const auto name = doc.at("digest_algorithm").get<std::string>();
      const auto algorithm = parse_digest_algorithm(name);
      if (!algorithm) {
        return Status(Code::kUnsupported,
                      "snapshot manifest digest_algorithm '" + name +
                          "' is not supported by this agent (it reads blake3 and sha256)",
                      "SnapshotFormatUnsupported");
      }
      m.digest_algorithm = *algorithm;
    }
    for (const auto& f : doc.at("files")) {
      ManifestFile file{.path = f.at("path").get<std::string>(),
                        .size = f.at("size").get<std::uint64_t>(),
                        .mode = f.value("mode", 0600u)};
      if (f.contains(whole_key) == f.contains(chunks_key)) {
        return invalid("file " + file.path + " needs exactly one of " + whole_key + " and " +
                       chunks_key);
      }
      if (f.contains(whole_key)) {
        file.digest = f.at(whole_key).get<std::string>();
      } else {
        file.digest_chunks = f.at(chunks_key).get<std::vector<std::string>>();
        if (m.chunk_bytes == 0 ||
            file.digest_chunks.size() != chunk_count(file.size, m.chunk_bytes)) {
          return invalid("file " + file.path + " lists " +
                         std::to_string(file.digest_chunks.size()) + " chunk digests for " +
                         std::to_string(file.size) + " bytes in chunks of " +
                         std::to_string(m.chunk_bytes));
        }
      }
      m.files.push_back(std::move(file));
    }
  } catch (const json::exception& e) {
    return invalid(e.what());
  }
  return m;
}

}  // namespace ferry::store
