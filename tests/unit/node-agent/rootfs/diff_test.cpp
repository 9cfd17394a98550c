#include "rootfs/diff.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "rootfs/safe_fs.h"

namespace ferry::rootfs {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-rootfs-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content, mode_t mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

void whiteout(const std::string& path) {
  ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << path;
}

void make_opaque(const std::string& dir) {
  ASSERT_EQ(::setxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0), 0) << dir;
}

void set_mtime(const std::string& path, time_t sec, long nsec) {
  struct timespec ts[2] = {{0, UTIME_OMIT}, {sec, nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
}

// The image: what both the source's lower layers and the target's fresh
// rootfs contain.
void make_image(const std::string& root) {
  write_file(root + "/etc/config", "old config\n");
  write_file(root + "/etc/hostname", "image\n");
  write_file(root + "/var/log/old.log", "old log\n");
  write_file(root + "/var/cache/pkg/a", "a");
  write_file(root + "/var/cache/pkg/b", "b");
  write_file(root + "/opt/app/lib/a.so", "a.so");
  write_file(root + "/opt/app/lib/b.so", "b.so");
  fs::create_directories(root + "/usr/lib");
  write_file(root + "/usr/lib/libc.so", "libc");
  fs::create_directory_symlink("usr/lib", root + "/lib");
}

// What overlayfs leaves in the upper dir after the container ran:
//   echo new > /etc/config; add files; rm /var/log/old.log; rm -r /var/cache/pkg;
//   rm -r /opt/app/lib && mkdir /opt/app/lib && add c.so;
//   rm /lib && mkdir /lib && add /lib/own.so
void make_upper(const std::string& upper) {
  fs::create_directories(upper + "/etc");
  write_file(upper + "/etc/config", "new config\n");
  write_file(upper + "/etc/secret", "s3cret", 0640);
  ASSERT_EQ(::chown((upper + "/etc/secret").c_str(), 1000, 2000), 0);
  set_mtime(upper + "/etc/secret", 1600000000, 123456789);
  write_file(upper + "/etc/suid-tool", "#!/bin/sh\n", 04755);
  ASSERT_EQ(::link((upper + "/etc/secret").c_str(), (upper + "/etc/secret-link").c_str()), 0);
  fs::create_symlink("/etc/config", upper + "/etc/abs-link");
  fs::create_symlink("../var/log", upper + "/etc/rel-link");
  ASSERT_EQ(::lchown((upper + "/etc/abs-link").c_str(), 1000, 1000), 0);
  fs::create_directories(upper + "/var/log");
  whiteout(upper + "/var/log/old.log");
  fs::create_directories(upper + "/var/cache");
  whiteout(upper + "/var/cache/pkg");
  fs::create_directories(upper + "/opt/app/lib");
  make_opaque(upper + "/opt/app/lib");
  write_file(upper + "/opt/app/lib/c.so", "c.so");
  fs::create_directories(upper + "/home/user");
  ASSERT_EQ(::chown((upper + "/home/user").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((upper + "/home/user").c_str(), 0750), 0);
  ASSERT_EQ(::mkfifo((upper + "/home/user/fifo").c_str(), 0620), 0);
  ASSERT_EQ(::chmod((upper + "/home/user/fifo").c_str(), 0620), 0);  // past the umask
  set_mtime(upper + "/home/user", 1500000000, 0);
  fs::create_directories(upper + "/lib");
  make_opaque(upper + "/lib");
  write_file(upper + "/lib/own.so", "own");
  ASSERT_EQ(::setxattr((upper + "/etc/suid-tool").c_str(), "user.origin", "ferry", 5, 0), 0);
}

class RootfsDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for mknod, chown and trusted.* xattrs";
  }
  std::string path(const std::string& rel) const { return tmp_.path() + "/" + rel; }

  // Writes a diff whose index.json is `entries`, with content files `data`.
  std::string write_diff(const std::string& entries,
                         const std::map<std::string, std::string>& data = {}) {
    std::string diff = path("evil-diff");
    fs::create_directories(diff + "/data");
    write_file(diff + "/index.json", R"({"format_version": 1, "entries": )" + entries + "}");
    for (const auto& [name, content] : data) write_file(diff + "/" + name, content);
    return diff;
  }

  TempDir tmp_;
};

TEST_F(RootfsDiffTest, CaptureThenApplyReproducesTheContainersView) {
  make_image(path("target"));
  make_upper(path("upper"));
  auto captured = capture_upper_dir(path("upper"), path("diff"));
  ASSERT_TRUE(captured.ok()) << captured.status().to_string();
  EXPECT_EQ(captured->files, 5u);  // config, secret, suid-tool, c.so, own.so
  EXPECT_EQ(captured->hardlinks, 1u);
  EXPECT_EQ(captured->symlinks, 2u);
  EXPECT_EQ(captured->deletions, 2u);
  EXPECT_EQ(captured->opaque_dirs, 2u);
  EXPECT_EQ(captured->special, 1u);
  EXPECT_EQ(captured->bytes, 11u + 6u + 10u + 4u + 3u);

  // The diff holds no device-node whiteouts, only files and directories.
  for (const auto& e : fs::recursive_directory_iterator(path("diff"))) {
    EXPECT_TRUE(e.is_regular_file() || e.is_directory()) << e.path();
  }
  auto index = index_from_json(read_file(path("diff/index.json")));
  ASSERT_TRUE(index.ok());
  int whiteouts = 0;
  for (const auto& e : index->entries) whiteouts += e.type == EntryType::kWhiteout;
  EXPECT_EQ(whiteouts, 2);

  auto applied = apply_diff(path("diff"), path("target"));
  ASSERT_TRUE(applied.ok()) << applied.status().to_string();
  EXPECT_EQ(applied->files, 5u);
  EXPECT_EQ(applied->deletions, 2u);

  const std::string t = path("target");
  EXPECT_EQ(read_file(t + "/etc/config"), "new config\n");  // changed
  EXPECT_EQ(read_file(t + "/etc/hostname"), "image\n");     // untouched
  EXPECT_EQ(read_file(t + "/etc/secret"), "s3cret");        // new
  struct stat secret = lstat_of(t + "/etc/secret");
  EXPECT_EQ(secret.st_mode & 07777, 0640u);
  EXPECT_EQ(secret.st_uid, 1000u);
  EXPECT_EQ(secret.st_gid, 2000u);
  EXPECT_EQ(secret.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(secret.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(lstat_of(t + "/etc/secret-link").st_ino, secret.st_ino);
  EXPECT_EQ(lstat_of(t + "/etc/suid-tool").st_mode & 07777, 04755u);
  char xattr[16] = {};
  EXPECT_EQ(::getxattr((t + "/etc/suid-tool").c_str(), "user.origin", xattr, sizeof xattr), 5);
  EXPECT_STREQ(xattr, "ferry");
  EXPECT_EQ(fs::read_symlink(t + "/etc/abs-link"), "/etc/config");
  EXPECT_EQ(fs::read_symlink(t + "/etc/rel-link"), "../var/log");
  EXPECT_EQ(lstat_of(t + "/etc/abs-link").st_uid, 1000u);
  EXPECT_FALSE(fs::exists(fs::symlink_status(t + "/var/log/old.log")));  // deleted file
  EXPECT_FALSE(fs::exists(fs::symlink_status(t + "/var/cache/pkg")));    // deleted dir
  EXPECT_TRUE(fs::is_directory(t + "/var/log"));
  // Opaque: the image's a.so and b.so are hidden.
  std::vector<std::string> libs;
  for (const auto& e : fs::directory_iterator(t + "/opt/app/lib")) {
    libs.push_back(e.path().filename());
  }
  EXPECT_EQ(libs, (std::vector<std::string>{"c.so"}));
  // The image's /lib symlink became the container's real directory, and
  // what it pointed to is untouched.
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(t + "/lib")));
  EXPECT_EQ(read_file(t + "/lib/own.so"), "own");
  EXPECT_EQ(read_file(t + "/usr/lib/libc.so"), "libc");
  EXPECT_FALSE(fs::exists(t + "/usr/lib/own.so"));
  struct stat home = lstat_of(t + "/home/user");
  EXPECT_EQ(home.st_mode & 07777, 0750u);
  EXPECT_EQ(home.st_uid, 1000u);
  EXPECT_EQ(home.st_mtim.tv_sec, 1500000000);  // set after its children
  struct stat fifo = lstat_of(t + "/home/user/fifo");
  EXPECT_TRUE(S_ISFIFO(fifo.st_mode));
  EXPECT_EQ(fifo.st_mode & 07777, 0620u);
}

TEST_F(RootfsDiffTest, ApplyingTwiceGivesTheSameTree) {
  make_image(path("target"));
  make_upper(path("upper"));
  ASSERT_TRUE(capture_upper_dir(path("upper"), path("diff")).ok());
  ASSERT_TRUE(apply_diff(path("diff"), path("target")).ok());
  auto again = apply_diff(path("diff"), path("target"));
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(read_file(path("target/etc/secret")), "s3cret");
  EXPECT_EQ(lstat_of(path("target/etc/secret-link")).st_ino,
            lstat_of(path("target/etc/secret")).st_ino);
}

TEST_F(RootfsDiffTest, CaptureRefusesANonEmptyOutputDir) {
  fs::create_directories(path("upper"));
  write_file(path("diff/leftover"), "x");
  auto r = capture_upper_dir(path("upper"), path("diff"));
  EXPECT_EQ(r.status().code(), Code::kAlreadyExists);
}

TEST_F(RootfsDiffTest, CaptureRefusesOverlayFeaturesThatKeepDataInTheImage) {
  write_file(path("upper/bin/tool"), "");
  ASSERT_EQ(::setxattr(path("upper/bin/tool").c_str(), "trusted.overlay.metacopy", "", 0, 0), 0);
  auto meta = capture_upper_dir(path("upper"), path("diff1"));
  EXPECT_EQ(meta.status().code(), Code::kUnsupported);
  EXPECT_NE(meta.status().message().find("bin/tool"), std::string::npos);

  fs::create_directories(path("upper2/renamed"));
  ASSERT_EQ(::setxattr(path("upper2/renamed").c_str(), "trusted.overlay.redirect", "/orig", 5, 0),
            0);
  auto redirect = capture_upper_dir(path("upper2"), path("diff2"));
  EXPECT_EQ(redirect.status().code(), Code::kUnsupported);
}

// A sentinel outside the rootfs that no diff may change.
class UnsafeDiffTest : public RootfsDiffTest {
 protected:
  void SetUp() override {
    RootfsDiffTest::SetUp();
    fs::create_directories(path("rootfs/etc"));
    write_file(path("outside/passwd"), "root:x:0:0\n");
  }
  void expect_refused(const Result<DiffStats>& r, Code code = Code::kInvalidArgument) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_EQ(r.status().reason(), "UnsafeRootfsDiff") << r.status().to_string();
    EXPECT_EQ(read_file(path("outside/passwd")), "root:x:0:0\n");
    std::vector<std::string> outside;
    for (const auto& e : fs::directory_iterator(path("outside"))) outside.push_back(e.path());
    EXPECT_EQ(outside.size(), 1u);
  }
  // Validation runs first: nothing at all is written.
  void expect_rootfs_untouched() { EXPECT_FALSE(fs::exists(path("rootfs/etc/benign"))); }
  const std::string benign_entries_ =
      R"({"path": "etc", "type": "dir", "mode": 493},
         {"path": "etc/benign", "type": "file", "mode": 420, "data": "data/0", "size": 1})";
  const std::string benign_ = benign_entries_ + ",";
};

TEST_F(UnsafeDiffTest, DotDotPathIsRefused) {
  auto diff = write_diff("[" + benign_ + R"(
      {"path": "etc/../../outside/passwd", "type": "file", "mode": 420, "data": "data/0",
       "size": 1}])",
                         {{"data/0", "x"}});
  expect_refused(apply_diff(diff, path("rootfs")));
  expect_rootfs_untouched();
}

TEST_F(UnsafeDiffTest, AbsolutePathIsRefused) {
  auto diff = write_diff("[" + benign_ + R"(
      {"path": ")" + path("outside/passwd") +
                             R"(", "type": "whiteout"}])",
                         {{"data/0", "x"}});
  expect_refused(apply_diff(diff, path("rootfs")));
  expect_rootfs_untouched();
}

TEST_F(UnsafeDiffTest, WritingThroughTheDiffsOwnSymlinkIsRefused) {
  auto diff = write_diff("[" + benign_ + R"(
      {"path": "escape", "type": "symlink", "target": ")" +
                             path("outside") + R"("},
      {"path": "escape/passwd", "type": "file", "mode": 420, "data": "data/0", "size": 1}])",
                         {{"data/0", "x"}});
  auto r = apply_diff(diff, path("rootfs"));
  expect_refused(r);
  EXPECT_NE(r.status().message().find("escape"), std::string::npos);
  expect_rootfs_untouched();
}

TEST_F(UnsafeDiffTest, HardLinkToOutsideIsRefused) {
  auto diff = write_diff("[" + benign_ + R"(
      {"path": "etc/passwd", "type": "hardlink", "link_to": "../outside/passwd"}])",
                         {{"data/0", "x"}});
  expect_refused(apply_diff(diff, path("rootfs")));
  expect_rootfs_untouched();
}

TEST_F(UnsafeDiffTest, ContentReadThroughASymlinkIsRefused) {
  auto diff = write_diff("[" + benign_entries_ + "]", {});
  fs::create_symlink(path("outside/passwd"), diff + "/data/0");  // would leak host files
  auto r = apply_diff(diff, path("rootfs"));
  expect_refused(r);
  EXPECT_FALSE(fs::exists(path("rootfs/etc/benign")));
}

TEST_F(UnsafeDiffTest, ASymlinkAlreadyInTheRootfsIsReplacedNotFollowed) {
  // The image (or anything before us) put a symlink where the diff has a
  // directory: the directory replaces it; the outside stays untouched.
  fs::remove_all(path("rootfs/etc"));
  fs::create_directory_symlink(path("outside"), path("rootfs/etc"));
  auto diff = write_diff(R"([
      {"path": "etc", "type": "dir", "mode": 493},
      {"path": "etc/passwd", "type": "file", "mode": 420, "data": "data/0", "size": 5}])",
                         {{"data/0", "owned"}});
  auto r = apply_diff(diff, path("rootfs"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(path("rootfs/etc"))));
  EXPECT_EQ(read_file(path("rootfs/etc/passwd")), "owned");
  EXPECT_EQ(read_file(path("outside/passwd")), "root:x:0:0\n");
}

TEST_F(UnsafeDiffTest, PathWalkNeverFollowsASymlinkComponent) {
  fs::create_directory_symlink(path("outside"), path("rootfs/link"));
  auto root = internal::open_dir(path("rootfs"));
  ASSERT_TRUE(root.ok());
  auto r = internal::open_dir_beneath(root->get(), {"link"}, "link/passwd");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(r.status().reason(), "UnsafeRootfsDiff");
  EXPECT_NE(r.status().message().find("'link' is a symlink"), std::string::npos)
      << r.status().message();
}

TEST_F(UnsafeDiffTest, UnknownFormatVersionIsRefused) {
  std::string diff = path("future");
  write_file(diff + "/index.json", R"({"format_version": 2, "entries": []})");
  auto r = apply_diff(diff, path("rootfs"));
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_EQ(r.status().reason(), "RootfsDiffFormatUnsupported");
}

}  // namespace
}  // namespace ferry::rootfs
