#include "posix/mountinfo.h"

#include <gtest/gtest.h>

namespace ferry::posix {
namespace {

// Lines as a privileged agent container on a cgroup v1 node sees them: its
// own cgroup mounts, then the node's hierarchies bound over them; and a
// mount point with a space (octal-escaped by the kernel).
constexpr char kMountinfo[] =
    "1045 1040 0:61 / /sys ro,nosuid - sysfs sysfs ro\n"
    "1046 1045 0:62 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    "1047 1046 0:30 /kubepods/pod1/abc /sys/fs/cgroup/freezer rw shared:14 - cgroup cgroup "
    "rw,freezer\n"
    "1048 1046 0:31 /kubepods/pod1/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "1049 1046 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
    "1050 1040 0:70 / /var/lib/my\\040cgroups rw - cgroup2 none rw\n"
    "1051 1040 0:71 / /proc rw - proc proc rw\n";

TEST(MountinfoTest, ListsEveryCgroupV1AndV2MountInOrder) {
  std::vector<std::string> cgroups;
  for (const auto& m : parse_mountinfo(kMountinfo)) {
    if (m.fstype == "cgroup" || m.fstype == "cgroup2") cgroups.push_back(m.mount_point);
  }
  EXPECT_EQ(cgroups,
            (std::vector<std::string>{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/cpu,cpuacct",
                                      "/sys/fs/cgroup/unified", "/var/lib/my cgroups"}));
}

TEST(MountinfoTest, ReadsEveryFieldPastTheOptionalOnes) {
  auto entries = parse_mountinfo(kMountinfo);
  ASSERT_EQ(entries.size(), 7u);
  EXPECT_EQ(entries[2].root, "/kubepods/pod1/abc");
  EXPECT_EQ(entries[2].fstype, "cgroup");  // after "shared:14 -"
  EXPECT_EQ(entries[2].source, "cgroup");
  EXPECT_EQ(entries[2].super_options, "rw,freezer");
}

TEST(MountinfoTest, MalformedLinesAreSkipped) {
  EXPECT_TRUE(parse_mountinfo("garbage\n1 2 3\n- cgroup\n\n").empty());
}

TEST(MountinfoTest, AnUnreadableFileHasNoEntries) {
  EXPECT_TRUE(read_mountinfo("/nonexistent/mountinfo").empty());
}

}  // namespace
}  // namespace ferry::posix
