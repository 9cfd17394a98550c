// The agent's on-disk memory of what it holds for each Migration: which
// containers it froze, and whether they were killed. Kept node-local
// (/var/lib/ferry/records) so a restarted agent finishes or rolls back what
// it started: without it, a frozen source would stay frozen forever after a
// crash mid-migration. One small JSON file per Migration UID, written
// atomically; the directory is read once, and lookups (on every pod event
// of the node) are served from memory, which every write keeps in step.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::agent {

struct FrozenContainer {
  std::string name;
  std::string id;
};

// What the checkpoint measured. Kept with the record so that the status
// write reporting it, when it is retried (the API was unavailable) or done
// by a restarted agent, still carries the sizes and times.
struct CheckpointFigures {
  double freeze_seconds = 0, dump_seconds = 0, publish_seconds = 0;
  std::uint64_t bytes = 0;
};

struct Record {
  enum class State {
    kPreparing,      // the pod leaving its Services; nothing frozen yet (a retry continues)
    kCheckpointing,  // freeze and dump under way (a restart here means: roll back)
    kFrozen,         // every container frozen and its snapshot published
    kKilled,         // killed while frozen (switch done); cleanup left
  };
  std::string migration_uid;
  std::string ns;
  std::string migration;  // name
  std::string pod;
  std::string pod_uid;
  std::vector<FrozenContainer> containers;
  State state = State::kCheckpointing;
  std::string failure;        // why the checkpoint failed, if it did (still frozen)
  CheckpointFigures figures;  // set once frozen
  // PostCopy: the containers' memory is served from this agent's process
  // (CRIU page servers) rather than published. A restarted agent has lost
  // them, so the restored copy cannot get its memory: it rolls back.
  bool post_copy = false;
};

class RecordStore {
 public:
  explicit RecordStore(std::string dir) : dir_(std::move(dir)) {}
  Status save(const Record& record);
  Status erase(const std::string& migration_uid);
  std::optional<Record> find(const std::string& ns, const std::string& migration);
  Result<std::vector<Record>> load_all();

 private:
  Status load_locked();

  std::string dir_;
  std::mutex mu_;
  bool loaded_ = false;                  // guarded by mu_
  std::map<std::string, Record> cache_;  // by migration uid; guarded by mu_
};

}  // namespace ferry::agent
