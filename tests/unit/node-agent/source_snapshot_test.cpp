#include "checkpoint/source_snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ferry::checkpoint {
namespace {

TEST(OverlayUpperDirTest, FindsTheUpperDirOfTheRootfsMount) {
  std::string path =
      std::filesystem::temp_directory_path() / ("ferry-mountinfo-" + std::to_string(getpid()));
  std::ofstream(path)
      << "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
         "812 30 0:120 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw,"
         "relatime - overlay overlay rw,lowerdir=/var/lib/containerd/s/1/fs,upperdir=/var/lib/"
         "containerd/s/7/fs,workdir=/var/lib/containerd/s/7/work\n"
         "900 30 0:130 / /other rw - ext4 /dev/vda rw\n";
  auto upper =
      overlay_upper_dir("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs", path);
  ASSERT_TRUE(upper.ok()) << upper.status().to_string();
  EXPECT_EQ(*upper, "/var/lib/containerd/s/7/fs");
  auto not_overlay = overlay_upper_dir("/other", path);
  EXPECT_EQ(not_overlay.status().code(), Code::kNotFound);
  EXPECT_EQ(overlay_upper_dir("/missing", path).status().code(), Code::kNotFound);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ferry::checkpoint
