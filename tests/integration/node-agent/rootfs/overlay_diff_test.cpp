// The rootfs diff against real overlayfs: the kernel makes the whiteouts and
// opaque directories, a container's changes go through one overlay mount,
// the diff is captured from its upper dir and applied to a second overlay
// mount of the same lower layer, and the two merged views must be the same.
// Needs root (mount).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "rootfs/diff.h"

namespace ferry::rootfs {
namespace {

namespace fs = std::filesystem;

void write_file(const std::string& path, const std::string& content, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Everything a container could observe about a tree, keyed by path.
std::map<std::string, std::string> describe_tree(const std::string& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = fs::relative(it->path(), root).string();
    struct stat st {};
    EXPECT_EQ(::lstat(it->path().c_str(), &st), 0);
    std::string d = "mode=" + std::to_string(st.st_mode) + " uid=" + std::to_string(st.st_uid) +
                    " gid=" + std::to_string(st.st_gid);
    if (S_ISREG(st.st_mode)) {
      d += " nlink=" + std::to_string(st.st_nlink) + " content=" + read_file(it->path());
    }
    if (S_ISLNK(st.st_mode)) d += " target=" + fs::read_symlink(it->path()).string();
    if (!S_ISDIR(st.st_mode) || rel.find('/') != std::string::npos) {
      d += " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    }
    out[rel] = d;
  }
  return out;
}

class OverlayDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ferry-overlay-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    for (auto d : {"lower", "upper1", "work1", "merged1", "upper2", "work2", "merged2"}) {
      fs::create_directory(base_ + "/" + d);
    }
    make_image(base_ + "/lower");
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) {
      EXPECT_EQ(::umount2(it->c_str(), MNT_DETACH), 0) << *it << ": " << std::strerror(errno);
    }
    if (!base_.empty()) fs::remove_all(base_);
  }

  // Returns false (and skips) when this machine does not let us mount.
  bool mount_overlay(const std::string& n) {
    std::string opts = "lowerdir=" + base_ + "/lower,upperdir=" + base_ + "/upper" + n +
                       ",workdir=" + base_ + "/work" + n;
    std::string target = base_ + "/merged" + n;
    if (::mount("overlay", target.c_str(), "overlay", 0, opts.c_str()) != 0) {
      int err = errno;
      ADD_FAILURE() << "mount overlay: errno " << err << " (" << std::strerror(err) << ")";
      return false;
    }
    mounts_.push_back(target);
    return true;
  }

  static void make_image(const std::string& l) {
    for (auto d : {"/etc", "/var/log", "/var/cache/pkg", "/opt/app/lib", "/usr/lib", "/srv"}) {
      fs::create_directories(l + d);
    }
    write_file(l + "/etc/config", "old config\n");
    write_file(l + "/etc/hostname", "image\n");
    write_file(l + "/var/log/old.log", "old log\n");
    write_file(l + "/var/cache/pkg/a", "a");
    write_file(l + "/opt/app/lib/a.so", "a.so");
    write_file(l + "/opt/app/lib/b.so", "b.so");
    write_file(l + "/usr/lib/libc.so", "libc");
    write_file(l + "/srv/data", "dir replaced by a file");
    fs::create_directory_symlink("usr/lib", l + "/lib");
  }

  // What a running container does to its root filesystem.
  static void act_like_a_container(const std::string& m) {
    write_file(m + "/etc/config", "new config\n");
    write_file(m + "/etc/secret", "s3cret", 0640);
    ASSERT_EQ(::chown((m + "/etc/secret").c_str(), 1000, 2000), 0);
    ASSERT_EQ(::link((m + "/etc/secret").c_str(), (m + "/etc/secret-link").c_str()), 0);
    ASSERT_EQ(::chmod((m + "/etc/hostname").c_str(), 0600), 0);  // metadata-only change
    fs::create_symlink("/etc/config", m + "/etc/abs-link");
    fs::remove(m + "/var/log/old.log");
    fs::remove_all(m + "/var/cache/pkg");
    fs::remove_all(m + "/opt/app/lib");
    fs::create_directory(m + "/opt/app/lib");  // overlay makes it opaque
    write_file(m + "/opt/app/lib/c.so", "c.so");
    fs::remove(m + "/lib");
    fs::create_directory(m + "/lib");
    write_file(m + "/lib/own.so", "own");
    fs::remove_all(m + "/srv");
    write_file(m + "/srv", "now a file");
    fs::create_directories(m + "/home/user/.cache");
    ASSERT_EQ(::chown((m + "/home/user").c_str(), 1000, 1000), 0);
    write_file(m + "/home/user/.cache/big", std::string(3 << 20, 'z'));
    ASSERT_EQ(::mkfifo((m + "/home/user/fifo").c_str(), 0600), 0);
  }

  std::string base_;
  std::vector<std::string> mounts_;
};

TEST_F(OverlayDiffTest, AppliedDiffReproducesTheMergedView) {
  if (!mount_overlay("1")) return;
  act_like_a_container(base_ + "/merged1");

  // The kernel's own bookkeeping, so this test exercises the real formats.
  struct stat wh {};
  ASSERT_EQ(::lstat((base_ + "/upper1/var/log/old.log").c_str(), &wh), 0);
  EXPECT_TRUE(S_ISCHR(wh.st_mode) && wh.st_rdev == makedev(0, 0)) << "not a whiteout";
  char opaque[4] = {};
  EXPECT_EQ(::getxattr((base_ + "/upper1/opt/app/lib").c_str(), "trusted.overlay.opaque", opaque,
                       sizeof opaque),
            1);

  auto captured = capture_upper_dir(base_ + "/upper1", base_ + "/diff");
  ASSERT_TRUE(captured.ok()) << captured.status().to_string();
  std::printf(
      "[ capture ] files=%llu dirs=%llu symlinks=%llu hardlinks=%llu deletions=%llu "
      "opaque=%llu bytes=%llu\n",
      static_cast<unsigned long long>(captured->files),
      static_cast<unsigned long long>(captured->dirs),
      static_cast<unsigned long long>(captured->symlinks),
      static_cast<unsigned long long>(captured->hardlinks),
      static_cast<unsigned long long>(captured->deletions),
      static_cast<unsigned long long>(captured->opaque_dirs),
      static_cast<unsigned long long>(captured->bytes));
  EXPECT_EQ(captured->deletions, 2u);  // old.log, pkg
  EXPECT_EQ(captured->hardlinks, 1u);

  if (!mount_overlay("2")) return;
  ASSERT_NE(describe_tree(base_ + "/merged2"), describe_tree(base_ + "/merged1"))
      << "the comparison below would prove nothing";
  auto applied = apply_diff(base_ + "/diff", base_ + "/merged2");
  ASSERT_TRUE(applied.ok()) << applied.status().to_string();

  auto want = describe_tree(base_ + "/merged1");
  auto got = describe_tree(base_ + "/merged2");
  for (const auto& [path, d] : want) EXPECT_EQ(got[path], d) << path;
  for (const auto& [path, d] : got) EXPECT_TRUE(want.count(path)) << "extra " << path;
  EXPECT_FALSE(want.count("var/log/old.log"));
  EXPECT_FALSE(want.count("opt/app/lib/a.so"));
  EXPECT_EQ(read_file(base_ + "/lower/usr/lib/libc.so"), "libc");  // lower untouched
  EXPECT_FALSE(fs::exists(base_ + "/lower/usr/lib/own.so"));
}

}  // namespace
}  // namespace ferry::rootfs
