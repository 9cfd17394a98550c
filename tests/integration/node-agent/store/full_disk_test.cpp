// The snapshot store on a full disk, for real: a 2 MiB tmpfs stands in for
// shared storage that runs out of space mid-snapshot. Needs root (mount).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "store/snapshot_store.h"

namespace ferry::store {
namespace {

namespace fs = std::filesystem;

SnapshotMeta meta_for(const std::string& uid) {
  SnapshotMeta meta;
  meta.binding = {.namespace_name = "shop",
                  .pod_name = "cart-0",
                  .pod_uid = "pod-uid",
                  .container_name = "app",
                  .migration_uid = uid};
  meta.criu_version = "4.2";
  return meta;
}

class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ferry-fulldisk-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    root_ = base_ + "/store";
    fs::create_directory(root_);
    if (::mount("tmpfs", root_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0700") != 0) {
      int err = errno;
      GTEST_SKIP() << "mounting a tmpfs is not permitted here (errno " << err << ", "
                   << std::strerror(err) << "); the full-disk test needs root";
    }
    mounted_ = true;
  }
  // Also runs after a failed assertion, so the tmpfs never outlives the test.
  void TearDown() override {
    if (mounted_) {
      EXPECT_EQ(::umount2(root_.c_str(), MNT_DETACH), 0) << std::strerror(errno);
    }
    if (!base_.empty()) fs::remove_all(base_);
  }

  void expect_nothing_left() {
    EXPECT_FALSE(fs::exists(root_ + "/mig-1")) << "a published (or half-published) dir remains";
    if (fs::exists(root_ + "/.staging")) {
      EXPECT_TRUE(fs::is_empty(root_ + "/.staging")) << "a staging dir remains";
    }
    struct statvfs vfs {};
    ASSERT_EQ(::statvfs(root_.c_str(), &vfs), 0);
    EXPECT_GT(vfs.f_bavail * vfs.f_frsize, (3u << 20) / 2) << "space was not given back";
  }

  std::string base_, root_;
  bool mounted_ = false;
};

TEST_F(FullDiskTest, SnapshotBiggerThanTheDiskIsResourceExhausted) {
  const std::string source = base_ + "/pages-1.img";
  {
    std::ofstream out(source, std::ios::binary);
    std::string chunk(1 << 20, 'p');
    for (int i = 0; i < 3; ++i) out << chunk;  // 3 MiB onto 2 MiB
  }
  SnapshotStore store(root_);
  {
    auto writer = store.begin(meta_for("mig-1"));
    ASSERT_TRUE(writer.ok()) << writer.status().to_string();
    Status st = (*writer)->add_file_from("pages-1.img", source);
    std::printf("[ full disk ] add_file_from: %s (reason %s)\n", st.to_string().c_str(),
                st.reason().c_str());
    EXPECT_EQ(st.code(), Code::kResourceExhausted);
    EXPECT_EQ(st.reason(), "SnapshotStoreFull");
    EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("pages-1.img"), std::string::npos) << st.message();
    EXPECT_FALSE(fs::exists((*writer)->dir() + "/pages-1.img"));  // no partial file
  }  // the writer goes without publishing
  expect_nothing_left();
}

TEST_F(FullDiskTest, ManifestOnAFullDiskLeavesNothingHalfPublished) {
  SnapshotStore store(root_);
  auto writer = store.begin(meta_for("mig-1"));
  ASSERT_TRUE(writer.ok()) << writer.status().to_string();
  // CRIU's images took every last page; the manifest does not fit.
  int fd = ::open(((*writer)->dir() + "/pages-1.img").c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  std::string chunk(4096, 'p');
  size_t written = 0;
  for (size_t step : {size_t{4096}, size_t{1}}) {
    while (::write(fd, chunk.data(), step) == static_cast<ssize_t>(step)) written += step;
    ASSERT_EQ(errno, ENOSPC);
  }
  ::close(fd);
  ASSERT_GT(written, 1u << 20);

  auto published = (*writer)->publish();
  ASSERT_FALSE(published.ok());
  const Status& st = published.status();
  std::printf("[ full disk ] publish: %s (reason %s)\n", st.to_string().c_str(),
              st.reason().c_str());
  EXPECT_EQ(st.code(), Code::kResourceExhausted);
  EXPECT_EQ(st.reason(), "SnapshotStoreFull");
  EXPECT_NE(st.message().find("manifest.json"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("nothing was published"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists((*writer)->dir()));
  expect_nothing_left();

  // The store works again once there is room.
  auto small = store.begin(meta_for("mig-2"));
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE((*small)->add_file("pages-1.img", "small").ok());
  ASSERT_TRUE((*small)->publish().ok());
  Binding b = meta_for("mig-2").binding;
  EXPECT_TRUE(store.open("mig-2", "app", b, Verify::kFull).ok());
}

}  // namespace
}  // namespace ferry::store
