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
  if (s == "Frozen") return Record::State::kFrozen;
  if (s == "Killed") return Record::State::kKilled;
  return Record::State::kCheckpointing;
}

}  // namespace

Status RecordStore::save(const Record& r) const {
  json containers = json::array();
  for (const auto& c : r.containers) containers.push_back({{"name", c.name}, {"id", c.id}});
  json j = {{"migrationUid", r.migration_uid},
            {"namespace", r.ns},
            {"migration", r.migration},
            {"pod", r.pod},
            {"podUid", r.pod_uid},
            {"containers", containers},
            {"state", state_name(r.state)},
            {"failure", r.failure}};
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return internal_error("create " + dir_ + ": " + ec.message());
  return posix::write_file_atomic(dir_ + "/" + r.migration_uid + ".json", j.dump() + "\n", 0600);
}

Status RecordStore::erase(const std::string& migration_uid) const {
  std::error_code ec;
  fs::remove(dir_ + "/" + migration_uid + ".json", ec);
  return ec ? internal_error("remove record " + migration_uid + ": " + ec.message()) : Status();
}

Result<std::vector<Record>> RecordStore::load_all() const {
  std::vector<Record> out;
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return out;
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
             .failure = j.value("failure", "")};
    for (const auto& c : j.value("containers", json::array())) {
      r.containers.push_back({c.value("name", ""), c.value("id", "")});
    }
    out.push_back(std::move(r));
  }
  if (ec) return internal_error("read records in " + dir_ + ": " + ec.message());
  return out;
}

std::optional<Record> RecordStore::find(const std::string& ns, const std::string& migration) const {
  auto all = load_all();
  if (!all.ok()) return std::nullopt;
  for (auto& r : *all) {
    if (r.ns == ns && r.migration == migration) return r;
  }
  return std::nullopt;
}

}  // namespace ferry::agent
