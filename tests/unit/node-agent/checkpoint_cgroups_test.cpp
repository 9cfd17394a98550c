#include "checkpoint/checkpoint_cgroups.h"

#include <gtest/gtest.h>

namespace ferry::checkpoint {
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

TEST(CgroupMountPointsTest, ListsEveryCgroupV1AndV2MountInOrder) {
  EXPECT_EQ(cgroup_mount_points(kMountinfo),
            (std::vector<std::string>{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/cpu,cpuacct",
                                      "/sys/fs/cgroup/unified", "/var/lib/my cgroups"}));
}

TEST(CgroupMountPointsTest, MalformedLinesAreSkipped) {
  EXPECT_TRUE(cgroup_mount_points("garbage\n1 2 3\n- cgroup\n\n").empty());
}

TEST(CheckpointCgroupsTest, TheNameIsOnePathComponent) {
  for (const char* bad : {"", "a/b", "..", "."}) {
    auto c = CheckpointCgroups::discover(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ferry::checkpoint
