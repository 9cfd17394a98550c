// /proc/<pid>/mountinfo, parsed once for every reader: the agent finds a
// container's overlay upper dir and the node's cgroup hierarchies in it,
// ferry-runc the cgroup yards CRIU left behind.
#pragma once

#include <string>
#include <vector>

namespace ferry::posix {

// One line: ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] -
// FSTYPE SOURCE SUPER_OPTIONS (proc(5)), with the kernel's octal escapes
// (" " as \040) decoded in the paths.
struct MountEntry {
  std::string root;
  std::string mount_point;
  std::string fstype;
  std::string source;
  std::string super_options;
};

// The entries of mountinfo text, in order; malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(const std::string& text);
// parse_mountinfo of a file; empty when it cannot be read.
std::vector<MountEntry> read_mountinfo(const std::string& path = "/proc/self/mountinfo");

}  // namespace ferry::posix
