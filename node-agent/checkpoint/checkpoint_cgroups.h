// Where the agent's checkpoints run: one cgroup per container, outside the
// agent's own pod, in every cgroup hierarchy of the node.
//
// Stopping a container kills every process of its cgroup, and the agent
// runs `runc checkpoint` (and so CRIU) as its child. A restart of the
// agent's pod in the middle of a dump would kill CRIU while its parasite
// code runs inside the source's tasks, and those tasks crash: the source's
// state is lost (bench/results/engine.md, session 10). Run from these
// cgroups, a dump outlives the agent and ends on its own, leaving the
// source frozen and intact; the next agent waits for the container's cgroup
// to empty before it rolls back.
#pragma once

#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::checkpoint {

class CheckpointCgroups {
 public:
  // `name` (e.g. "ferry-checkpoint") below the root of every cgroup
  // hierarchy mounted in this mount namespace (v1 and v2, each once);
  // `ns_file` the cgroup namespace a checkpoint enters to join them (the
  // node's, /proc/1/ns/cgroup, for an agent in its own cgroup namespace;
  // empty: the agent's). NotFound when no cgroup hierarchy is mounted.
  static Result<CheckpointCgroups> discover(const std::string& name,
                                            const std::string& ns_file = "");

  // Creates the container's cgroup in every hierarchy (with cpuset v1's
  // cpus and mems copied from its parent, which a new cpuset lacks) and
  // returns the cgroup.procs files to join (process::SpawnOptions).
  Result<std::vector<std::string>> prepare(const std::string& container_id) const;
  // Whether any process is still in the container's cgroup: a checkpoint
  // that an earlier agent started and that has not ended.
  Result<bool> busy(const std::string& container_id) const;
  // Removes the container's cgroups; one still in use stays (best effort).
  void release(const std::string& container_id) const;

  // The directory `name` in each hierarchy.
  const std::vector<std::string>& dirs() const { return dirs_; }
  const std::string& ns_file() const { return ns_file_; }

 private:
  CheckpointCgroups(std::vector<std::string> dirs, std::string ns_file)
      : dirs_(std::move(dirs)), ns_file_(std::move(ns_file)) {}
  std::vector<std::string> dirs_;
  std::string ns_file_;
};

}  // namespace ferry::checkpoint
