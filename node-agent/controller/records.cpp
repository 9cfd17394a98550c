#include "controller/records.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "posix/atomic_file.h"

namespace ferry::agent {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const char* state_name(Record::State s) {
  switch (s) {
    case Record::State::kPreparing:
      return "Preparing";
    case Record::State::kCheckpointing:
      return "Checkpointing";
    case Record::State::kFrozen:
      return "Frozen";
    case Record::State::kKilled:
      return "Killed";
  }
  return "Checkpointing";
}

Record::State parse_state(const std::string& s) {
  if (s == "Preparing") return Record::State::kPreparing;
  if (s == "Frozen") return Record::State::kFrozen;
  if (s == "Killed") return Record::State::kKilled;
  return Record::State::kCheckpointing;
}

}  // namespace

Status RecordStore::save(const Record& r) {
  json containers = json::array();
  for (const auto& c : r.containers) containers.push_back({{"name", c.name}, {"id", c.id}});
  json j = {{"migrationUid", r.migration_uid},
            {"namespace", r.ns},
            {"migration", r.migration},
            {"pod", r.pod},
            {"podUid", r.pod_uid},
            {"containers", containers},
            {"state", state_name(r.state)},
            {"failure", r.failure},
            {"postCopy", r.post_copy},
            {"checkpoint",
             {{"freezeSeconds", r.figures.freeze_seconds},
              {"dumpSeconds", r.figures.dump_seconds},
              {"publishSeconds", r.figures.publish_seconds},
              {"bytes", r.figures.bytes}}}};
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return internal_error("create " + dir_ + ": " + ec.message());
  std::lock_guard lock(mu_);
  FERRY_RETURN_IF_ERROR(load_locked());
  FERRY_RETURN_IF_ERROR(
      posix::write_file_atomic(dir_ + "/" + r.migration_uid + ".json", j.dump() + "\n", 0600));
  cache_[r.migration_uid] = r;
  return {};
}

Status RecordStore::erase(const std::string& migration_uid) {
  std::lock_guard lock(mu_);
  std::error_code ec;
  fs::remove(dir_ + "/" + migration_uid + ".json", ec);
  if (ec) return internal_error("remove record " + migration_uid + ": " + ec.message());
  cache_.erase(migration_uid);
  return {};
}

Result<std::vector<Record>> RecordStore::load_all() {
  std::lock_guard lock(mu_);
  FERRY_RETURN_IF_ERROR(load_locked());
  std::vector<Record> out;
  out.reserve(cache_.size());
  for (const auto& [uid, r] : cache_) out.push_back(r);
  return out;
}

Status RecordStore::load_locked() {
  if (loaded_) return {};
  std::error_code ec;
  if (!fs::exists(dir_, ec)) {
    loaded_ = true;
    return {};
  }
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;  // a torn write cannot happen (atomic)
    Record r{.migration_uid = j.value("migrationUid", ""),
             .ns = j.value("namespace", ""),
             .migration = j.value("migration", ""),
             .pod = j.value("pod", ""),
             .pod_uid = j.value("podUid", ""),
             .state = parse_state(j.value("state", "")),
             .failure = j.value("failure", ""),
             .post_copy = j.value("postCopy", false)};
    for (const auto& c : j.value("containers", json::array())) {
      r.containers.push_back({c.value("name", ""), c.value("id", "")});
    }
    // Absent in records of older agents: no figures to report.
    const json figures = j.value("checkpoint", json::object());
    r.figures = {.freeze_seconds = figures.value("freezeSeconds", 0.0),
                 .dump_seconds = figures.value("dumpSeconds", 0.0),
                 .publish_seconds = figures.value("publishSeconds", 0.0),
                 .bytes = figures.value("bytes", std::uint64_t{0})};
    cache_[r.migration_uid] = std::move(r);
  }
  if (ec) return internal_error("read records in " + dir_ + ": " + ec.message());
  loaded_ = true;
  return {};
}

std::optional<Record> RecordStore::find(const std::string& ns, const std::string& migration) {
  std::lock_guard lock(mu_);
  if (!load_locked().ok()) return std::nullopt;
  for (const auto& [uid, r] : cache_) {
    if (r.ns == ns && r.migration == migration) return r;
  }
  return std::nullopt;
}

}  // namespace ferry::agent
