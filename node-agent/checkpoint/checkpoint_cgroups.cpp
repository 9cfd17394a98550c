#include "checkpoint/checkpoint_cgroups.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "posix/mountinfo.h"
#include "posix/read_file.h"

namespace ferry::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr long kCgroupMagic = 0x27e0eb;     // CGROUP_SUPER_MAGIC (v1)
constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// mkdir, and for a v1 cpuset cgroup the cpus and mems of its parent: a new
// cpuset has none, and joining it would fail with ENOSPC.
Status make_cgroup(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return internal_error("create cgroup " + dir + ": " + std::strerror(errno));
  }
  const std::string parent = fs::path(dir).parent_path().string();
  for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
    const std::string own = dir + "/" + file;
    if (!fs::exists(own) || !trimmed(posix::read_file(own).value_or("")).empty()) continue;
    const std::string inherited = trimmed(posix::read_file(parent + "/" + file).value_or(""));
    if (inherited.empty()) continue;  // v2: empty is "the parent's"
    std::ofstream out(own);
    out << inherited << "\n";
    out.close();
    if (!out) return internal_error("copy " + parent + "/" + file + " to " + own);
  }
  return {};
}

}  // namespace

Result<CheckpointCgroups> CheckpointCgroups::discover(const std::string& name,
                                                      const std::string& ns_file) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return invalid_argument("checkpoint cgroup name '" + name + "': one path component");
  }
  std::vector<std::string> dirs;
  std::set<dev_t> seen;
  for (const auto& m : posix::read_mountinfo()) {
    if (m.fstype != "cgroup" && m.fstype != "cgroup2") continue;
    const std::string& mount = m.mount_point;
    // What the path shows now (a later mount may cover an earlier one), each
    // hierarchy once (one superblock each, whatever bind mounts show it).
    struct statfs sfs {};
    struct stat st {};
    if (::statfs(mount.c_str(), &sfs) != 0 || ::stat(mount.c_str(), &st) != 0) continue;
    const auto magic = static_cast<long>(sfs.f_type);
    if (magic != kCgroupMagic && magic != kCgroup2Magic) continue;
    if (!seen.insert(st.st_dev).second) continue;
    dirs.push_back(mount + "/" + name);
  }
  if (dirs.empty()) {
    return Status(Code::kNotFound, "no cgroup hierarchy is mounted (/proc/self/mountinfo)");
  }
  return CheckpointCgroups(std::move(dirs), ns_file);
}

Result<std::vector<std::string>> CheckpointCgroups::prepare(const std::string& container_id) const {
  std::vector<std::string> procs;
  for (const auto& dir : dirs_) {
    FERRY_RETURN_IF_ERROR(make_cgroup(dir));
    FERRY_RETURN_IF_ERROR(make_cgroup(dir + "/" + container_id));
    procs.push_back(dir + "/" + container_id + "/cgroup.procs");
  }
  return procs;
}

Result<bool> CheckpointCgroups::busy(const std::string& container_id) const {
  for (const auto& dir : dirs_) {
    const std::string procs = dir + "/" + container_id + "/cgroup.procs";
    std::error_code ec;
    if (!fs::exists(procs, ec)) continue;  // never made, or removed
    std::ifstream in(procs);
    if (!in) return internal_error("read " + procs + ": " + std::strerror(errno));
    std::string pid;
    if (in >> pid) return true;
  }
  return false;
}

void CheckpointCgroups::release(const std::string& container_id) const {
  for (const auto& dir : dirs_) (void)::rmdir((dir + "/" + container_id).c_str());
}

}  // namespace ferry::checkpoint
