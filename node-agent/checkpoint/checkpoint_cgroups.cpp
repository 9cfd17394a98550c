#include "checkpoint/checkpoint_cgroups.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

namespace ferry::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr long kCgroupMagic = 0x27e0eb;     // CGROUP_SUPER_MAGIC (v1)
constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC

std::string unescape(const std::string& s) {  // mountinfo writes " " as \040
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
    if (!fs::exists(own) || !trimmed(read_all(own)).empty()) continue;
    const std::string inherited = trimmed(read_all(parent + "/" + file));
    if (inherited.empty()) continue;  // v2: empty is "the parent's"
    std::ofstream out(own);
    out << inherited << "\n";
    out.close();
    if (!out) return internal_error("copy " + parent + "/" + file + " to " + own);
  }
  return {};
}

}  // namespace

std::vector<std::string> cgroup_mount_points(const std::string& mountinfo) {
  std::vector<std::string> out;
  std::istringstream lines(mountinfo);
  std::string line;
  while (std::getline(lines, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    std::istringstream f(line);
    std::vector<std::string> fields;
    for (std::string w; f >> w;) fields.push_back(w);
    size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (fields.size() < 5 || dash + 1 >= fields.size()) continue;
    const std::string& type = fields[dash + 1];
    if (type == "cgroup" || type == "cgroup2") out.push_back(unescape(fields[4]));
  }
  return out;
}

Result<CheckpointCgroups> CheckpointCgroups::discover(const std::string& name,
                                                      const std::string& ns_file) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return invalid_argument("checkpoint cgroup name '" + name + "': one path component");
  }
  std::vector<std::string> dirs;
  std::set<dev_t> seen;
  for (const auto& mount : cgroup_mount_points(read_all("/proc/self/mountinfo"))) {
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
