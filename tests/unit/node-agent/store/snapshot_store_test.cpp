// The snapshot store (node-agent/store/snapshot_store.h): publish and open
// round-trip, root-only modes, every kind of damage refused with its
// reason, the pod binding (and, for a binding left open at publish, the
// grant that names the pod later), unsafe names, concurrent writers, and
// retention by age and size that never removes a snapshot in use.
#include "store/snapshot_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "store/hashing.h"

namespace ferry::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-store-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string pattern(size_t size, unsigned seed) {
  std::string s(size, '\0');
  unsigned x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

SnapshotMeta meta_for(const std::string& migration_uid, const std::string& container = "app") {
  SnapshotMeta meta;
  meta.binding = {.namespace_name = "shop",
                  .pod_name = "cart-0",
                  .pod_uid = "0f6a1c2e-pod",
                  .container_name = container,
                  .migration_uid = migration_uid};
  meta.mode = MigrationMode::kPostCopy;
  meta.criu_version = "4.2";
  meta.runtime = {.name = "runc", .version = "1.2.4"};
  meta.image = {.reference = "registry.local/cart:1.0", .digest = "sha256:abc123"};
  meta.mount_destinations = {"/data", "/var/cache"};
  return meta;
}

// A fake wall clock the store reads through StoreOptions::now.
struct FakeWallClock {
  std::shared_ptr<std::atomic<std::int64_t>> ns = std::make_shared<std::atomic<std::int64_t>>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  StoreOptions options() const {
    return {.now = [ns = ns] {
      return std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::nanoseconds(ns->load())));
    }};
  }
  void advance(std::chrono::nanoseconds d) { *ns += d.count(); }
};

// Publishes a snapshot the way the agent will: CRIU writes image files
// straight into dir() (with its own modes), the rootfs diff is added.
Manifest publish(SnapshotStore& store, const std::string& uid, const std::string& container,
                 size_t page_bytes = 1 << 20) {
  auto writer = store.begin(meta_for(uid, container));
  EXPECT_TRUE(writer.ok()) << writer.status().to_string();
  if (!writer.ok()) return {};
  write_file((*writer)->dir() + "/pages-1.img", pattern(page_bytes, 1));
  write_file((*writer)->dir() + "/inventory.img", "inventory");
  EXPECT_TRUE((*writer)->add_file("rootfs/index.json", R"({"format_version":1})").ok());
  auto manifest = (*writer)->publish();
  EXPECT_TRUE(manifest.ok()) << manifest.status().to_string();
  return manifest.ok() ? *manifest : Manifest{};
}

class SnapshotStoreTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  SnapshotStore store_{tmp_.path()};
  const Binding expected_ = meta_for("mig-1").binding;
};

// Known answers: FIPS 180-2 for SHA-256, the BLAKE3 paper's reference
// implementation for BLAKE3 (the empty input and "abc").
TEST(DigesterTest, KnownVectors) {
  auto hex = [](DigestAlgorithm a, std::string_view data, std::size_t split) {
    Digester d(a);
    d.update(data.data(), split);  // in two updates: incremental is the same digest
    d.update(data.data() + split, data.size() - split);
    return d.hex_digest();
  };
  EXPECT_EQ(hex(DigestAlgorithm::kSha256, "abc", 1),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(DigestAlgorithm::kBlake3, "", 0),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  EXPECT_EQ(hex(DigestAlgorithm::kBlake3, "abc", 2),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  // Past BLAKE3's 1 KiB chunks and SIMD batches, split off every boundary.
  const std::string big = pattern(100000, 9);
  const std::string one_shot = hex(DigestAlgorithm::kBlake3, big, 0);
  EXPECT_EQ(hex(DigestAlgorithm::kBlake3, big, 1025), one_shot);
  EXPECT_EQ(hex(DigestAlgorithm::kBlake3, big, 65537), one_shot);
  EXPECT_NE(hex(DigestAlgorithm::kSha256, big, 0), one_shot);
  EXPECT_EQ(kDefaultDigestAlgorithm, DigestAlgorithm::kBlake3);
  EXPECT_EQ(parse_digest_algorithm("blake3"), DigestAlgorithm::kBlake3);
  EXPECT_EQ(parse_digest_algorithm("sha256"), DigestAlgorithm::kSha256);
  EXPECT_EQ(parse_digest_algorithm("md5"), std::nullopt);
}

TEST_F(SnapshotStoreTest, PublishThenOpenRoundTrip) {
  Manifest published = publish(store_, "mig-1", "app");
  ASSERT_EQ(published.files.size(), 3u);
  EXPECT_EQ(published.files[0].path, "inventory.img");
  EXPECT_EQ(published.files[1].path, "pages-1.img");
  EXPECT_EQ(published.files[1].size, 1u << 20);
  EXPECT_EQ(published.files[2].path, "rootfs/index.json");
  Digester inventory(kDefaultDigestAlgorithm);
  inventory.update("inventory", 9);
  EXPECT_EQ(published.files[0].digest, inventory.hex_digest());

  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_TRUE(snap.ok()) << snap.status().to_string();
  EXPECT_EQ(snap->dir, tmp_.path() + "/mig-1/app");
  EXPECT_TRUE(snap->lease.held());
  const Manifest& m = snap->manifest;
  EXPECT_EQ(m.format_version, kManifestFormatVersion);
  EXPECT_EQ(m.meta.binding, meta_for("mig-1").binding);
  EXPECT_EQ(m.meta.mode, MigrationMode::kPostCopy);
  EXPECT_EQ(m.meta.criu_version, "4.2");
  EXPECT_FALSE(m.meta.kernel.empty());  // filled in from uname
  EXPECT_FALSE(m.meta.architecture.empty());
  EXPECT_EQ(m.meta.runtime.name, "runc");
  EXPECT_EQ(m.meta.runtime.version, "1.2.4");
  EXPECT_EQ(m.meta.image.reference, "registry.local/cart:1.0");
  EXPECT_EQ(m.meta.image.digest, "sha256:abc123");
  EXPECT_EQ(m.meta.mount_destinations, (std::vector<std::string>{"/data", "/var/cache"}));
  EXPECT_EQ(m.created, published.created);
  ASSERT_EQ(m.files.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(m.files[i].digest, published.files[i].digest);
  EXPECT_EQ(read_file(snap->dir + "/pages-1.img"), pattern(1 << 20, 1));
  EXPECT_TRUE(fs::is_empty(tmp_.path() + "/.staging"));
}

TEST_F(SnapshotStoreTest, SnapshotsAreRootOnly) {
  auto writer = store_.begin(meta_for("mig-1"));
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(mode_of((*writer)->dir()), 0700u);
  write_file((*writer)->dir() + "/pages-1.img", "pages", 0644);  // CRIU's umask, not ours
  ASSERT_EQ(::mkdir(((*writer)->dir() + "/sub").c_str(), 0755), 0);
  write_file((*writer)->dir() + "/sub/x.img", "x", 0666);
  ASSERT_TRUE((*writer)->add_file("added.img", "y").ok());
  ASSERT_TRUE((*writer)->publish().ok());
  const std::string dir = tmp_.path() + "/mig-1/app";
  EXPECT_EQ(mode_of(tmp_.path() + "/mig-1"), 0700u);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir + "/sub"), 0700u);
  for (auto f : {"/pages-1.img", "/sub/x.img", "/added.img", "/manifest.json"}) {
    EXPECT_EQ(mode_of(dir + f), 0600u) << f;
  }
  EXPECT_EQ(mode_of(tmp_.path() + "/.staging"), 0700u);
}

TEST_F(SnapshotStoreTest, FlippedByteIsDataLossNamingTheFile) {
  publish(store_, "mig-1", "app");
  const std::string pages = tmp_.path() + "/mig-1/app/pages-1.img";
  int fd = ::open(pages.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, 123457), 1);
  c = static_cast<char>(c ^ 0x01);
  ASSERT_EQ(::pwrite(fd, &c, 1, 123457), 1);
  ::close(fd);

  auto full = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), Code::kDataLoss);
  EXPECT_EQ(full.status().reason(), "SnapshotChecksumMismatch");
  EXPECT_NE(full.status().message().find("pages-1.img"), std::string::npos)
      << full.status().message();
  // The fast path trades this check for speed, by design.
  EXPECT_TRUE(store_.open("mig-1", "app", expected_, Verify::kSizes).ok());
}

TEST_F(SnapshotStoreTest, TruncatedFileIsDataLossEvenOnTheFastPath) {
  publish(store_, "mig-1", "app");
  ASSERT_EQ(::truncate((tmp_.path() + "/mig-1/app/pages-1.img").c_str(), 4096), 0);
  for (Verify level : {Verify::kSizes, Verify::kFull}) {
    auto snap = store_.open("mig-1", "app", expected_, level);
    ASSERT_FALSE(snap.ok());
    EXPECT_EQ(snap.status().code(), Code::kDataLoss);
    EXPECT_EQ(snap.status().reason(), "SnapshotFileSizeMismatch");
    EXPECT_NE(snap.status().message().find("pages-1.img has 4096 bytes"), std::string::npos)
        << snap.status().message();
  }
}

TEST_F(SnapshotStoreTest, UnlistedFileIsDataLoss) {
  publish(store_, "mig-1", "app");
  write_file(tmp_.path() + "/mig-1/app/rootfs/smuggled", "x");
  auto snap = store_.open("mig-1", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kDataLoss);
  EXPECT_EQ(snap.status().reason(), "SnapshotUnlistedFile");
  EXPECT_NE(snap.status().message().find("rootfs/smuggled"), std::string::npos);
}

TEST_F(SnapshotStoreTest, MissingListedFileIsDataLoss) {
  publish(store_, "mig-1", "app");
  ASSERT_EQ(::unlink((tmp_.path() + "/mig-1/app/inventory.img").c_str()), 0);
  auto snap = store_.open("mig-1", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kDataLoss);
  EXPECT_EQ(snap.status().reason(), "SnapshotFileMissing");
  EXPECT_NE(snap.status().message().find("inventory.img"), std::string::npos);
}

TEST_F(SnapshotStoreTest, MissingManifestIsNotFound) {
  publish(store_, "mig-1", "app");
  ASSERT_EQ(::unlink((tmp_.path() + "/mig-1/app/manifest.json").c_str()), 0);
  auto snap = store_.open("mig-1", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kNotFound);
  EXPECT_EQ(snap.status().reason(), "SnapshotManifestMissing");
}

TEST_F(SnapshotStoreTest, MissingSnapshotIsNotFound) {
  auto none = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_EQ(none.status().reason(), "SnapshotNotFound");
  publish(store_, "mig-1", "app");
  Binding sidecar = expected_;
  sidecar.container_name = "sidecar";
  auto other = store_.open("mig-1", "sidecar", sidecar, Verify::kFull);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().reason(), "SnapshotNotFound");
}

TEST_F(SnapshotStoreTest, CorruptOrFutureManifestIsRefused) {
  publish(store_, "mig-1", "app");
  const std::string path = tmp_.path() + "/mig-1/app/manifest.json";
  std::string good = read_file(path);

  write_file(path, good.substr(0, good.size() / 2));
  auto cut = store_.open("mig-1", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), Code::kDataLoss);
  EXPECT_EQ(cut.status().reason(), "SnapshotManifestInvalid");

  std::string future = good;
  const std::string current = "\"format_version\": " + std::to_string(kManifestFormatVersion);
  future.replace(future.find(current), current.size(), "\"format_version\": 9");
  write_file(path, future);
  auto v9 = store_.open("mig-1", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(v9.ok());
  EXPECT_EQ(v9.status().code(), Code::kUnsupported);
  EXPECT_EQ(v9.status().reason(), "SnapshotFormatUnsupported");
  EXPECT_NE(v9.status().message().find("format_version 9"), std::string::npos);
}

TEST_F(SnapshotStoreTest, SnapshotOfAnotherPodIsRefused) {
  publish(store_, "mig-1", "app");
  std::vector<std::pair<std::string, Binding>> others;
  for (int i = 0; i < 4; ++i) {
    Binding b = expected_;
    (i == 0   ? b.namespace_name
     : i == 1 ? b.pod_name
     : i == 2 ? b.pod_uid
              : b.container_name) = "other";
    others.emplace_back("field " + std::to_string(i), b);
  }
  for (const auto& [what, b] : others) {
    auto snap = store_.open("mig-1", "app", b, Verify::kFull);
    ASSERT_FALSE(snap.ok()) << what;
    EXPECT_EQ(snap.status().code(), Code::kFailedPrecondition) << what;
    EXPECT_EQ(snap.status().reason(), "SnapshotBindingMismatch") << what;
    EXPECT_NE(snap.status().message().find("shop/cart-0"), std::string::npos)
        << snap.status().message();
  }
  // A manifest moved under another migration's directory is refused too.
  ASSERT_EQ(::mkdir((tmp_.path() + "/mig-2").c_str(), 0700), 0);
  ASSERT_EQ(::rename((tmp_.path() + "/mig-1/app").c_str(), (tmp_.path() + "/mig-2/app").c_str()),
            0);
  auto moved = store_.open("mig-2", "app", expected_, Verify::kSizes);
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.status().reason(), "SnapshotBindingMismatch");

  Binding incomplete = expected_;
  incomplete.pod_uid.clear();
  EXPECT_EQ(store_.open("mig-2", "app", incomplete, Verify::kSizes).status().code(),
            Code::kInvalidArgument);
}

TEST_F(SnapshotStoreTest, UnsafeNamesAreRejected) {
  for (std::string uid : {"", "..", ".staging", "a/b"}) {
    EXPECT_EQ(store_.begin(meta_for(uid)).status().code(), Code::kInvalidArgument) << uid;
    EXPECT_EQ(store_.open(uid, "app", expected_, Verify::kSizes).status().code(),
              Code::kInvalidArgument)
        << uid;
  }
  auto writer = store_.begin(meta_for("mig-1"));
  ASSERT_TRUE(writer.ok());
  for (std::string path : {"../x", "/etc/x", "a//b", "manifest.json", "a/./b"}) {
    EXPECT_EQ((*writer)->add_file(path, "x").code(), Code::kInvalidArgument) << path;
  }
  EXPECT_FALSE(fs::exists(tmp_.path() + "/x"));
}

TEST_F(SnapshotStoreTest, DestroyWithoutPublishRemovesStaging) {
  std::string dir;
  {
    auto writer = store_.begin(meta_for("mig-1"));
    ASSERT_TRUE(writer.ok());
    dir = (*writer)->dir();
    write_file(dir + "/pages-1.img", pattern(4096, 2));
    ASSERT_TRUE(fs::exists(dir));
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(fs::is_empty(tmp_.path() + "/.staging"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/mig-1"));
}

TEST_F(SnapshotStoreTest, SecondPublishOfTheSameSnapshotIsAlreadyExists) {
  auto first = store_.begin(meta_for("mig-1"));
  auto second = store_.begin(meta_for("mig-1"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE((*first)->add_file("pages-1.img", "first").ok());
  ASSERT_TRUE((*second)->add_file("pages-1.img", "second").ok());
  ASSERT_TRUE((*first)->publish().ok());
  auto again = (*second)->publish();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_EQ(again.status().reason(), "SnapshotExists");
  EXPECT_NE(again.status().message().find("nothing was published"), std::string::npos);
  EXPECT_FALSE(fs::exists((*second)->dir()));
  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_TRUE(snap.ok()) << snap.status().to_string();
  EXPECT_EQ(read_file(snap->dir + "/pages-1.img"), "first");
  // Later attempts fail before CRIU would run.
  EXPECT_EQ(store_.begin(meta_for("mig-1")).status().code(), Code::kAlreadyExists);
  EXPECT_EQ((*first)->publish().status().code(), Code::kFailedPrecondition);
}

TEST_F(SnapshotStoreTest, ParallelWritersNeverShareFiles) {
  constexpr int kWriters = 8;
  std::vector<std::thread> threads;
  threads.reserve(kWriters);
  std::vector<std::string> dirs(kWriters), errors(kWriters);
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      // Pairs of writers share a migration (a two-container pod).
      auto writer = store_.begin(meta_for("mig-" + std::to_string(i / 2), "c" + std::to_string(i)));
      if (!writer.ok()) {
        errors[i] = writer.status().to_string();
        return;
      }
      dirs[i] = (*writer)->dir();
      write_file(dirs[i] + "/pages-1.img", pattern(256 << 10, static_cast<unsigned>(i)));
      Status added = (*writer)->add_file("who", std::to_string(i));
      auto published = (*writer)->publish();
      if (!added.ok() || !published.ok()) errors[i] = published.status().to_string();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<std::string>(dirs.begin(), dirs.end()).size(), size_t{kWriters});
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_EQ(errors[i], "") << i;
    Binding b = meta_for("mig-" + std::to_string(i / 2), "c" + std::to_string(i)).binding;
    auto snap = store_.open(b.migration_uid, b.container_name, b, Verify::kFull);
    ASSERT_TRUE(snap.ok()) << snap.status().to_string();
    EXPECT_EQ(read_file(snap->dir + "/who"), std::to_string(i));
    EXPECT_EQ(read_file(snap->dir + "/pages-1.img"), pattern(256 << 10, static_cast<unsigned>(i)));
  }
}

// Publishes mig/app bound to `binding` (migration uid and container filled
// in), as the source agent does for an owned pod whose replacement does not
// exist yet.
void publish_bound(SnapshotStore& store, const std::string& uid, Binding binding) {
  SnapshotMeta meta = meta_for(uid);
  binding.migration_uid = uid;
  binding.container_name = "app";
  meta.binding = binding;
  auto writer = store.begin(meta);
  ASSERT_TRUE(writer.ok()) << writer.status().to_string();
  ASSERT_TRUE((*writer)->add_file("pages-1.img", pattern(4096, 3)).ok());
  auto published = (*writer)->publish();
  ASSERT_TRUE(published.ok()) << published.status().to_string();
  EXPECT_EQ(published->meta.binding, binding);
}

Binding pod_binding(const std::string& uid, const std::string& pod_name,
                    const std::string& pod_uid) {
  return {.namespace_name = "shop",
          .pod_name = pod_name,
          .pod_uid = pod_uid,
          .container_name = "app",
          .migration_uid = uid};
}

TEST_F(SnapshotStoreTest, BeginAcceptsABindingLeftOpenButNotAUidWithoutAName) {
  SnapshotMeta open = meta_for("mig-open");  // a ReplicaSet's: name and uid unknown
  open.binding.pod_name.clear();
  open.binding.pod_uid.clear();
  EXPECT_TRUE(store_.begin(open).ok());
  SnapshotMeta fixed_name = meta_for("mig-sts");  // a StatefulSet's: the name is known
  fixed_name.binding.pod_uid.clear();
  EXPECT_TRUE(store_.begin(fixed_name).ok());

  SnapshotMeta uid_only = meta_for("mig-bad");
  uid_only.binding.pod_name.clear();
  auto refused = store_.begin(uid_only);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("pod name"), std::string::npos)
      << refused.status().message();
  SnapshotMeta no_namespace = open;
  no_namespace.binding.namespace_name.clear();
  EXPECT_EQ(store_.begin(no_namespace).status().code(), Code::kInvalidArgument)
      << "the namespace is always known";
}

TEST_F(SnapshotStoreTest, AnOpenBindingIsNotRestorableBeforeItsGrant) {
  publish_bound(store_, "mig-rs", {.namespace_name = "shop"});
  auto snap =
      store_.open("mig-rs", "app", pod_binding("mig-rs", "web-x1", "uid-x1"), Verify::kFull);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kNotFound);
  EXPECT_EQ(snap.status().reason(), "SnapshotNotGranted");
  EXPECT_NE(snap.status().message().find("is not granted to a pod yet"), std::string::npos)
      << "ferry-runc's refusal that the agent reads as 'wait': " << snap.status().message();
  auto grant = store_.read_grant("mig-rs");
  ASSERT_FALSE(grant.ok());
  EXPECT_EQ(grant.status().code(), Code::kNotFound);
  EXPECT_EQ(grant.status().reason(), "SnapshotNotGranted");
}

TEST_F(SnapshotStoreTest, AGrantOpensTheSnapshotToThatPodOnly) {
  publish_bound(store_, "mig-rs", {.namespace_name = "shop"});
  ASSERT_TRUE(store_.grant("mig-rs", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).ok());
  auto grant = store_.read_grant("mig-rs");
  ASSERT_TRUE(grant.ok()) << grant.status().to_string();
  EXPECT_EQ(grant->pod_name, "web-x1");
  EXPECT_EQ(grant->pod_uid, "uid-x1");

  auto snap =
      store_.open("mig-rs", "app", pod_binding("mig-rs", "web-x1", "uid-x1"), Verify::kFull);
  ASSERT_TRUE(snap.ok()) << snap.status().to_string();
  EXPECT_EQ(read_file(snap->dir + "/pages-1.img"), pattern(4096, 3));
  snap = Result<VerifiedSnapshot>(Status(Code::kCancelled, "released"));

  for (const Binding& other :
       {pod_binding("mig-rs", "web-x2", "uid-x1"), pod_binding("mig-rs", "web-x1", "uid-x2"),
        pod_binding("mig-rs", "web-x2", "uid-x2")}) {
    auto refused = store_.open("mig-rs", "app", other, Verify::kSizes);
    ASSERT_FALSE(refused.ok()) << other.pod_name << "/" << other.pod_uid;
    EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
    EXPECT_EQ(refused.status().reason(), "SnapshotBindingMismatch");
  }
  Binding other_namespace = pod_binding("mig-rs", "web-x1", "uid-x1");
  other_namespace.namespace_name = "evil";
  EXPECT_EQ(store_.open("mig-rs", "app", other_namespace, Verify::kSizes).status().reason(),
            "SnapshotBindingMismatch")
      << "a grant names a pod, not a namespace";
}

TEST_F(SnapshotStoreTest, AStatefulSetBindingRefusesAGrantToAnotherName) {
  publish_bound(store_, "mig-sts", {.namespace_name = "shop", .pod_name = "db-0"});
  ASSERT_TRUE(store_.grant("mig-sts", {.pod_name = "db-1", .pod_uid = "uid-db1"}).ok());
  auto refused =
      store_.open("mig-sts", "app", pod_binding("mig-sts", "db-1", "uid-db1"), Verify::kSizes);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(refused.status().reason(), "SnapshotBindingMismatch");
  EXPECT_NE(refused.status().message().find("db-0"), std::string::npos)
      << refused.status().message();

  publish_bound(store_, "mig-sts2", {.namespace_name = "shop", .pod_name = "db-0"});
  ASSERT_TRUE(store_.grant("mig-sts2", {.pod_name = "db-0", .pod_uid = "uid-db0-new"}).ok());
  EXPECT_TRUE(
      store_.open("mig-sts2", "app", pod_binding("mig-sts2", "db-0", "uid-db0-new"), Verify::kFull)
          .ok());
  EXPECT_EQ(
      store_.open("mig-sts2", "app", pod_binding("mig-sts2", "db-0", "uid-db0-old"), Verify::kFull)
          .status()
          .reason(),
      "SnapshotBindingMismatch")
      << "the source pod of the same name is not the grantee";
}

TEST_F(SnapshotStoreTest, TheFirstGrantStands) {
  publish_bound(store_, "mig-rs", {.namespace_name = "shop"});
  ASSERT_TRUE(store_.grant("mig-rs", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).ok());
  Status again = store_.grant("mig-rs", {.pod_name = "web-x1", .pod_uid = "uid-x1"});
  EXPECT_TRUE(again.ok()) << "the same grant again is a no-op: " << again.to_string();
  for (const Grant& other :
       {Grant{"web-x2", "uid-x2"}, Grant{"web-x1", "uid-x2"}, Grant{"web-x2", "uid-x1"}}) {
    Status s = store_.grant("mig-rs", other);
    EXPECT_EQ(s.code(), Code::kAlreadyExists) << other.pod_name << "/" << other.pod_uid;
    EXPECT_EQ(s.reason(), "SnapshotAlreadyGranted");
    EXPECT_NE(s.message().find("web-x1"), std::string::npos) << s.message();
  }
  auto grant = store_.read_grant("mig-rs");
  ASSERT_TRUE(grant.ok());
  EXPECT_EQ(grant->pod_uid, "uid-x1");
  EXPECT_TRUE(
      store_.open("mig-rs", "app", pod_binding("mig-rs", "web-x1", "uid-x1"), Verify::kSizes).ok());
}

TEST_F(SnapshotStoreTest, AGrantNeedsAPodAndASafeMigrationUid) {
  EXPECT_EQ(store_.grant("mig-rs", {.pod_name = "", .pod_uid = "u"}).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_.grant("mig-rs", {.pod_name = "web", .pod_uid = ""}).code(),
            Code::kInvalidArgument);
  for (std::string uid : {"", "..", "a/b", ".staging"}) {
    EXPECT_EQ(store_.grant(uid, {.pod_name = "web", .pod_uid = "u"}).code(), Code::kInvalidArgument)
        << uid;
  }
  EXPECT_FALSE(fs::exists(tmp_.path() + "/mig-rs.grant"));
}

TEST_F(SnapshotStoreTest, AGrantIsARootOnlyFileThatRemoveDeletes) {
  publish_bound(store_, "mig-rs", {.namespace_name = "shop"});
  ASSERT_TRUE(store_.grant("mig-rs", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).ok());
  const std::string file = tmp_.path() + "/mig-rs.grant";
  ASSERT_TRUE(fs::is_regular_file(file));
  EXPECT_EQ(mode_of(file), 0600u);
  EXPECT_TRUE(store_.remove("mig-rs").ok());
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/mig-rs"));
  EXPECT_EQ(store_.read_grant("mig-rs").status().reason(), "SnapshotNotGranted");
  // A grant whose snapshot is already gone goes too.
  ASSERT_TRUE(store_.grant("mig-gone", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).ok());
  EXPECT_TRUE(store_.remove("mig-gone").ok());
  EXPECT_FALSE(fs::exists(tmp_.path() + "/mig-gone.grant"));
}

TEST_F(SnapshotStoreTest, ADamagedGrantIsDataLoss) {
  publish_bound(store_, "mig-rs", {.namespace_name = "shop"});
  write_file(tmp_.path() + "/mig-rs.grant", R"({"podName":"web-x1"})", 0600);
  auto grant = store_.read_grant("mig-rs");
  ASSERT_FALSE(grant.ok());
  EXPECT_EQ(grant.status().code(), Code::kDataLoss);
  EXPECT_EQ(grant.status().reason(), "SnapshotGrantInvalid");
  EXPECT_EQ(store_.open("mig-rs", "app", pod_binding("mig-rs", "web-x1", "uid-x1"), Verify::kSizes)
                .status()
                .reason(),
            "SnapshotGrantInvalid");
  EXPECT_EQ(store_.grant("mig-rs", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).code(),
            Code::kDataLoss)
      << "a damaged grant is not silently replaced";
}

TEST_F(SnapshotStoreTest, AGrantDoesNotWidenAFullyBoundSnapshot) {
  publish(store_, "mig-1", "app");  // bound to cart-0 / 0f6a1c2e-pod
  ASSERT_TRUE(store_.grant("mig-1", {.pod_name = "thief", .pod_uid = "uid-thief"}).ok());
  EXPECT_EQ(store_.open("mig-1", "app", pod_binding("mig-1", "thief", "uid-thief"), Verify::kSizes)
                .status()
                .reason(),
            "SnapshotBindingMismatch");
  EXPECT_TRUE(store_.open("mig-1", "app", expected_, Verify::kSizes).ok());
}

class SnapshotRetentionTest : public ::testing::Test {
 protected:
  std::vector<std::string> published() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(tmp_.path())) {
      std::string name = e.path().filename().string();
      if (name[0] != '.') out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  static std::vector<std::string> removed(const RetentionReport& r) {
    std::vector<std::string> out;
    for (const auto& m : r.removed) out.push_back(m.migration_uid + ":" + m.why);
    return out;
  }

  TempDir tmp_;
  FakeWallClock clock_;
  SnapshotStore store_{tmp_.path(), clock_.options()};
};

TEST_F(SnapshotRetentionTest, RemovesByAge) {
  publish(store_, "old", "app");
  clock_.advance(2h);
  publish(store_, "young", "app");
  clock_.advance(2h);
  auto report = store_.enforce_retention({.max_age = 3h});
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ(removed(*report), (std::vector<std::string>{"old:age"}));
  EXPECT_EQ(published(), (std::vector<std::string>{"young"}));
  EXPECT_TRUE(fs::is_empty(tmp_.path() + "/.trash"));
}

TEST_F(SnapshotRetentionTest, RemovesOldestWholeMigrationsUntilTheRestFit) {
  for (std::string uid : {"m1", "m2", "m3"}) {
    publish(store_, uid, "app", 1 << 20);
    publish(store_, uid, "sidecar", 1 << 20);
    clock_.advance(1min);
  }
  auto report = store_.enforce_retention({.max_age = 24h, .max_total_bytes = 5u << 20});
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ(removed(*report), (std::vector<std::string>{"m1:size"}));
  EXPECT_EQ(published(), (std::vector<std::string>{"m2", "m3"}));
  EXPECT_LE(report->bytes_remaining, 5u << 20);
  EXPECT_GE(report->bytes_remaining, 4u << 20);
  EXPECT_GE(report->removed[0].bytes, 2u << 20);
}

TEST_F(SnapshotRetentionTest, NeverRemovesASnapshotInUse) {
  publish(store_, "m1", "app");
  clock_.advance(1min);
  publish(store_, "m2", "app");
  Binding b = meta_for("m1").binding;
  {
    auto in_use = store_.open("m1", "app", b, Verify::kSizes);
    ASSERT_TRUE(in_use.ok());
    auto report = store_.enforce_retention({.max_age = 24h, .max_total_bytes = 0});
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->in_use, (std::vector<std::string>{"m1"}));
    EXPECT_EQ(removed(*report), (std::vector<std::string>{"m2:size"}));
    Status rm = store_.remove("m1");
    EXPECT_EQ(rm.code(), Code::kUnavailable);
    EXPECT_EQ(rm.reason(), "SnapshotInUse");
    // The lease still reads a complete snapshot.
    EXPECT_TRUE(fs::exists(in_use->dir + "/pages-1.img"));
  }
  auto report = store_.enforce_retention({.max_age = 24h, .max_total_bytes = 0});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(removed(*report), (std::vector<std::string>{"m1:size"}));
  EXPECT_TRUE(published().empty());
}

TEST_F(SnapshotRetentionTest, RemovesAbandonedStagingButNotALiveWriter) {
  auto live = store_.begin(meta_for("m1"));
  ASSERT_TRUE(live.ok());
  write_file((*live)->dir() + "/pages-1.img", "x");
  const std::string dead = tmp_.path() + "/.staging/dead-writer";
  ASSERT_EQ(::mkdir(dead.c_str(), 0700), 0);
  write_file(dead + "/pages-1.img", "y");

  auto early = store_.enforce_retention({.max_age = 1h});
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->staging_removed, 0u);
  EXPECT_TRUE(fs::exists(dead));

  clock_.advance(2h);
  auto report = store_.enforce_retention({.max_age = 1h});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->staging_removed, 1u);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists((*live)->dir()));
  EXPECT_TRUE((*live)->publish().ok());
}

TEST_F(SnapshotRetentionTest, RemoveDeletesEveryContainerAndIsIdempotent) {
  publish(store_, "m1", "app");
  publish(store_, "m1", "sidecar");
  EXPECT_TRUE(store_.remove("m1").ok());
  EXPECT_TRUE(published().empty());
  EXPECT_TRUE(store_.remove("m1").ok());
  EXPECT_EQ(store_.open("m1", "app", meta_for("m1").binding, Verify::kSizes).status().reason(),
            "SnapshotNotFound");
}

TEST_F(SnapshotRetentionTest, RemovesAMigrationsGrantWithItsSnapshots) {
  publish_bound(store_, "old", {.namespace_name = "shop"});
  ASSERT_TRUE(store_.grant("old", {.pod_name = "web-x1", .pod_uid = "uid-x1"}).ok());
  clock_.advance(2h);
  publish_bound(store_, "young", {.namespace_name = "shop"});
  ASSERT_TRUE(store_.grant("young", {.pod_name = "web-x2", .pod_uid = "uid-x2"}).ok());
  auto report = store_.enforce_retention({.max_age = 1h});
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ(removed(*report), (std::vector<std::string>{"old:age"}));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/old.grant")) << "a grant left behind forever";
  EXPECT_TRUE(fs::exists(tmp_.path() + "/young.grant"));
  EXPECT_EQ(published(), (std::vector<std::string>{"young", "young.grant"}));
}

TEST(ManifestTest, ToleratesUnknownFieldsAndRoundTripsTime) {
  Manifest m;
  m.created = std::chrono::system_clock::time_point(std::chrono::nanoseconds(1700000000123456789));
  m.meta = meta_for("mig-1");
  m.files = {{.path = "a.img", .size = 3, .digest = "00", .mode = 0600}};
  std::string text = manifest_to_json(m);
  text.insert(text.find('{') + 1, R"("added_in_v1_5": {"x": [1, 2]},)");
  auto back = manifest_from_json(text);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->created, m.created);
  EXPECT_EQ(format_time(m.created), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(back->meta.binding, m.meta.binding);
  ASSERT_EQ(back->files.size(), 1u);
  EXPECT_EQ(back->files[0].mode, 0600u);
  EXPECT_EQ(back->total_bytes(), 3u);
}

// Large files get one digest per chunk (store chunk size made small here),
// hashed and verified on every core; the rest keep one digest.
class ChunkedSnapshotTest : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kChunk = 64 << 10;
  TempDir tmp_;
  SnapshotStore store_{tmp_.path(), {.digest_chunk_bytes = kChunk}};
  const Binding expected_ = meta_for("mig-1").binding;
  const std::string pages_ = pattern(16 * kChunk + 100, 1);

  static std::vector<std::string> chunk_digests(const std::string& data) {
    std::vector<std::string> out;
    for (size_t off = 0; off < data.size(); off += kChunk) {
      Digester sha(kDefaultDigestAlgorithm);
      sha.update(data.data() + off, std::min<size_t>(kChunk, data.size() - off));
      out.push_back(sha.hex_digest());
    }
    return out;
  }
  void flip(const std::string& path, off_t at) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    ASSERT_EQ(::pread(fd, &c, 1, at), 1);
    c = static_cast<char>(c ^ 0x01);
    ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
    ::close(fd);
  }
};

TEST_F(ChunkedSnapshotTest, LargeFilesAreListedChunkByChunk) {
  Manifest m = publish(store_, "mig-1", "app", pages_.size());
  ASSERT_EQ(m.files.size(), 3u);
  EXPECT_EQ(m.format_version, kManifestFormatVersion);
  EXPECT_EQ(m.digest_algorithm, DigestAlgorithm::kBlake3);
  EXPECT_EQ(m.chunk_bytes, kChunk);
  const ManifestFile& pages = m.files[1];
  ASSERT_EQ(pages.path, "pages-1.img");
  EXPECT_TRUE(pages.digest.empty());
  EXPECT_EQ(pages.digest_chunks, chunk_digests(pages_));  // 17: the last holds 100 bytes
  EXPECT_EQ(m.files[0].digest_chunks.size(), 0u);         // inventory.img: one digest
  EXPECT_FALSE(m.files[0].digest.empty());

  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_TRUE(snap.ok()) << snap.status().to_string();
  EXPECT_EQ(snap->manifest.files[1].digest_chunks, pages.digest_chunks);
}

TEST_F(ChunkedSnapshotTest, AFlippedByteNamesTheCorruptedChunk) {
  publish(store_, "mig-1", "app", pages_.size());
  flip(tmp_.path() + "/mig-1/app/pages-1.img", 3 * kChunk + 5);
  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), Code::kDataLoss);
  EXPECT_EQ(snap.status().reason(), "SnapshotChecksumMismatch");
  EXPECT_NE(snap.status().message().find("pages-1.img is corrupted in bytes 196608-262143"),
            std::string::npos)
      << snap.status().message();
}

// A restore verifies the memory image while CRIU reads it: open() checks
// everything else and only the size of the deferred file, and
// verify_checksums() later finds what open() left.
TEST_F(ChunkedSnapshotTest, DeferredChecksumsAreLeftToTheCallerAndStillCatchCorruption) {
  publish(store_, "mig-1", "app", pages_.size());
  flip(tmp_.path() + "/mig-1/app/pages-1.img", 3 * kChunk + 5);
  auto pages_only = [](const std::string& path) { return path == "pages-1.img"; };
  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull, pages_only);
  ASSERT_TRUE(snap.ok()) << snap.status().to_string();
  EXPECT_EQ(snap->unverified, std::vector<std::string>{"pages-1.img"});
  Status later = verify_checksums(snap->dir, snap->manifest, snap->unverified, 0, "restore");
  EXPECT_EQ(later.reason(), "SnapshotChecksumMismatch");
  EXPECT_NE(later.message().find("restore: file pages-1.img is corrupted in bytes 196608-262143"),
            std::string::npos)
      << later.message();
  // The files open() did check are still checked: corrupt one of those.
  flip(tmp_.path() + "/mig-1/app/pages-1.img", 3 * kChunk + 5);  // back as it was
  EXPECT_TRUE(verify_checksums(snap->dir, snap->manifest, snap->unverified, 0, "restore").ok());
  flip(tmp_.path() + "/mig-1/app/inventory.img", 0);
  auto refused = store_.open("mig-1", "app", expected_, Verify::kFull, pages_only);
  EXPECT_EQ(refused.status().reason(), "SnapshotChecksumMismatch");
  EXPECT_EQ(verify_checksums(snap->dir, snap->manifest, {"nope.img"}, 0, "restore").reason(),
            "SnapshotUnlistedFile");
}

// CRIU appends to its images while the writer's background hasher digests
// every completed chunk; publish reads only the rest, and the manifest is
// the same as if it had read everything.
TEST_F(ChunkedSnapshotTest, ChunksHashedWhileWrittenGiveTheSameManifest) {
  auto writer = store_.begin(meta_for("mig-1"));
  ASSERT_TRUE(writer.ok());
  (*writer)->hash_while_written();
  const std::string path = (*writer)->dir() + "/pages-1.img";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  for (size_t off = 0; off < pages_.size(); off += 10000) {  // not chunk-aligned writes
    size_t n = std::min<size_t>(10000, pages_.size() - off);
    ASSERT_EQ(::write(fd, pages_.data() + off, n), static_cast<ssize_t>(n));
  }
  ::close(fd);
  write_file((*writer)->dir() + "/inventory.img", "inventory");
  auto m = (*writer)->publish();
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  ASSERT_EQ(m->files[1].path, "pages-1.img");
  EXPECT_EQ(m->files[1].digest_chunks, chunk_digests(pages_));
  EXPECT_EQ(m->files[1].size, pages_.size());
  EXPECT_TRUE(store_.open("mig-1", "app", expected_, Verify::kFull).ok());
}

TEST(BackgroundHasherTest, DigestsEveryByteAsItIsWrittenAndHashFilesGoesOnFromThere) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::string data = pattern(3 * kChunk + 110, 3);
  BackgroundHasher hasher(tmp.path(), kDefaultDigestAlgorithm, kChunk);
  const std::string path = tmp.path() + "/pages-1.img";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, data.data(), 3 * kChunk + 10), static_cast<ssize_t>(3 * kChunk + 10));
  ASSERT_EQ(::mkdir((tmp.path() + "/rootfs-diff").c_str(), 0700), 0);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (hasher.bytes_hashed() < 3 * kChunk + 10 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  // The producer writes on after the hasher stopped: publish reads that.
  ASSERT_EQ(::write(fd, data.data() + 3 * kChunk + 10, 100), 100);
  ::close(fd);
  auto done = hasher.finish();
  ASSERT_EQ(done.size(), 1u);  // a directory is not hashed
  auto chunk_digest = [&](std::uint64_t from, std::uint64_t length) {
    Digester sha(kDefaultDigestAlgorithm);
    sha.update(data.data() + from, length);
    return sha.hex_digest();
  };
  std::vector<std::string> want;
  for (std::uint64_t c = 0; c < 3; ++c) want.push_back(chunk_digest(c * kChunk, kChunk));
  BackgroundHasher::Digested& got = done["pages-1.img"];
  ASSERT_EQ(got.size(), 4u);
  for (std::uint64_t c = 0; c < 3; ++c) {
    EXPECT_EQ(got[c].digest, want[c]) << "chunk " << c;
    EXPECT_EQ(got[c].partial, nullptr);
  }
  EXPECT_EQ(got[3].bytes, 10u) << "the 10 bytes of the last chunk were read too";
  ASSERT_NE(got[3].partial, nullptr);
  auto digests = hash_files(
      tmp.path(), {{.path = "pages-1.img", .chunk_bytes = kChunk, .progress = std::move(got)}},
      kDefaultDigestAlgorithm);
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  want.push_back(chunk_digest(3 * kChunk, 110));
  EXPECT_EQ((*digests)[0].digests, want);
  EXPECT_EQ((*digests)[0].size, data.size());
}

// A LateStart the test lets the late workers through or not, counting what
// hash_files asks of it.
class TestLateStart : public LateStart {
 public:
  bool wait() override {
    std::unique_lock lock(mu_);
    ++waits_;
    changed_.wait(lock, [&] { return open_ || closed_; });
    return open_;
  }
  void close() override {
    std::lock_guard lock(mu_);
    closed_ = true;
    ++closes_;
    changed_.notify_all();
  }
  void open() {
    std::lock_guard lock(mu_);
    if (!closed_) open_ = true;
    changed_.notify_all();
  }
  int waits() {
    std::lock_guard lock(mu_);
    return waits_;
  }
  int closes() {
    std::lock_guard lock(mu_);
    return closes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool open_ = false;
  bool closed_ = false;
  int waits_ = 0;
  int closes_ = 0;
};

// The chunk digests of `data` hashed in one thread, for comparison.
std::vector<std::string> chunk_digests(const std::string& data, std::uint64_t chunk) {
  std::vector<std::string> out;
  for (std::uint64_t off = 0; off < data.size(); off += chunk) {
    Digester d(kDefaultDigestAlgorithm);
    d.update(data.data() + off, std::min<std::uint64_t>(chunk, data.size() - off));
    out.push_back(d.hex_digest());
  }
  return out;
}

// A restore's verification whose CRIU never waits for it: the late worker
// never starts, is sent home when the work is done, and nothing hangs.
TEST(HashFilesTest, LateWorkersNeverLetThroughAreSentHomeOnceTheWorkIsDone) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::string data = pattern(40 * kChunk + 3, 11);
  write_file(tmp.path() + "/pages-1.img", data);
  TestLateStart gate;
  auto digests =
      hash_files(tmp.path(), {{.path = "pages-1.img", .chunk_bytes = kChunk}},
                 kDefaultDigestAlgorithm, {.threads = 1, .late_threads = 1, .late_start = &gate});
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  EXPECT_EQ((*digests)[0].digests, chunk_digests(data, kChunk));
  EXPECT_EQ(gate.waits(), 1) << "one late worker waited";
  EXPECT_EQ(gate.closes(), 1) << "and was sent home";
}

// CRIU already waits: the late workers share the work with the others,
// and every digest is still right.
TEST(HashFilesTest, LateWorkersLetThroughShareTheWork) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::vector<std::string> data = {pattern(300 * kChunk + 9, 12), pattern(50 * kChunk, 13)};
  write_file(tmp.path() + "/pages-1.img", data[0]);
  write_file(tmp.path() + "/pages-2.img", data[1]);
  TestLateStart gate;
  gate.open();
  auto digests =
      hash_files(tmp.path(),
                 {{.path = "pages-1.img", .chunk_bytes = kChunk},
                  {.path = "pages-2.img", .chunk_bytes = kChunk}},
                 kDefaultDigestAlgorithm, {.threads = 1, .late_threads = 2, .late_start = &gate});
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  EXPECT_EQ((*digests)[0].digests, chunk_digests(data[0], kChunk));
  EXPECT_EQ((*digests)[1].digests, chunk_digests(data[1], kChunk));
  EXPECT_EQ(gate.waits(), 2);
  EXPECT_EQ(gate.closes(), 1);
}

// One piece of work leaves nothing for a second worker: none waits.
TEST(HashFilesTest, NoLateWorkerForASinglePiece) {
  TempDir tmp;
  write_file(tmp.path() + "/core-1.img", "small");
  TestLateStart gate;
  gate.open();
  auto digests = hash_files(tmp.path(), {{.path = "core-1.img"}}, kDefaultDigestAlgorithm,
                            {.threads = 1, .late_threads = 1, .late_start = &gate});
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  EXPECT_EQ((*digests)[0].digests, chunk_digests("small", 4096));
  EXPECT_EQ(gate.waits(), 0);
}

TEST(BackgroundHasherTest, SeveralReadersShareTheChunksAndEveryDigestIsRight) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::vector<std::string> data = {pattern(9 * kChunk + 7, 5), pattern(6 * kChunk, 6)};
  write_file(tmp.path() + "/pages-1.img", data[0]);
  write_file(tmp.path() + "/pages-2.img", data[1]);
  BackgroundHasher hasher(tmp.path(), kDefaultDigestAlgorithm, kChunk, 3);
  const std::uint64_t total = data[0].size() + data[1].size();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (hasher.bytes_hashed() < total && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(hasher.bytes_hashed(), total) << "every byte is read exactly once";
  auto done = hasher.finish();
  ASSERT_EQ(done.size(), 2u);
  for (std::size_t f = 0; f < data.size(); ++f) {
    const std::string name = "pages-" + std::to_string(f + 1) + ".img";
    const BackgroundHasher::Digested& got = done[name];
    const std::uint64_t chunks = chunk_count(data[f].size(), kChunk);
    ASSERT_EQ(got.size(), chunks) << name;
    for (std::uint64_t c = 0; c < chunks; ++c) {
      const std::uint64_t length = std::min<std::uint64_t>(kChunk, data[f].size() - c * kChunk);
      Digester sha(kDefaultDigestAlgorithm);
      sha.update(data[f].data() + c * kChunk, length);
      const std::string want = sha.hex_digest();
      if (length == kChunk) {
        EXPECT_EQ(got[c].digest, want) << name << " chunk " << c;
      } else {  // a short last chunk stays open: the file may grow
        ASSERT_NE(got[c].partial, nullptr) << name;
        EXPECT_EQ(got[c].bytes, length);
        EXPECT_EQ(got[c].partial->hex_digest(), want);
      }
    }
  }
}

TEST(HashFilesTest, GoesOnFromWhicheverChunksWereDigestedOrBegun) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::string data = pattern(4 * kChunk, 7);
  write_file(tmp.path() + "/pages-1.img", data);
  auto chunk_digest = [&](std::uint64_t c) {
    Digester sha(kDefaultDigestAlgorithm);
    sha.update(data.data() + c * kChunk, kChunk);
    return sha.hex_digest();
  };
  // Chunk 0 not started, 1 done, 2 begun over 100 bytes, 3 not listed: a
  // second reader took chunk 1 while the first was still on chunk 0.
  std::vector<ChunkProgress> progress(3);
  progress[1].digest = chunk_digest(1);
  progress[2].partial = std::make_shared<Digester>(kDefaultDigestAlgorithm);
  progress[2].partial->update(data.data() + 2 * kChunk, 100);
  progress[2].bytes = 100;
  auto digests = hash_files(
      tmp.path(), {{.path = "pages-1.img", .chunk_bytes = kChunk, .progress = std::move(progress)}},
      kDefaultDigestAlgorithm);
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  EXPECT_EQ((*digests)[0].digests, (std::vector<std::string>{chunk_digest(0), chunk_digest(1),
                                                             chunk_digest(2), chunk_digest(3)}));
}

// The hasher's one assumption is that a file is written once, front to
// back. If a producer broke it, the snapshot lists a stale digest and the
// reader refuses it: a failed restore, never a wrong one.
TEST_F(ChunkedSnapshotTest, AFileRewrittenAfterItWasHashedIsRefusedAtVerification) {
  auto writer = store_.begin(meta_for("mig-1"));
  ASSERT_TRUE(writer.ok());
  (*writer)->hash_while_written();
  const std::string path = (*writer)->dir() + "/pages-1.img";
  write_file(path, pages_);
  auto* hasher_probe = &**writer;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (hasher_probe->chunks_hashed_while_written() < 16 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(hasher_probe->chunks_hashed_while_written(), 16u);
  flip(path, 5);  // in place, inside the first chunk, already digested
  ASSERT_TRUE((*writer)->publish().ok());
  auto snap = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().reason(), "SnapshotChecksumMismatch");
  EXPECT_NE(snap.status().message().find("bytes 0-65535"), std::string::npos)
      << snap.status().message();
}

TEST(ManifestTest, ReadsVersionOneAndRefusesInconsistentChunkLists) {
  Manifest m;
  m.meta = meta_for("mig-1");
  m.files = {{.path = "a.img", .size = 3, .digest = "00", .mode = 0600}};
  m.format_version = 1;  // what an agent of that version wrote: SHA-256 under its name
  const std::string v1 = manifest_to_json(m);
  EXPECT_NE(v1.find("\"sha256\": \"00\""), std::string::npos) << v1;
  EXPECT_EQ(v1.find("digest_algorithm"), std::string::npos) << v1;
  auto old = manifest_from_json(v1);
  ASSERT_TRUE(old.ok()) << old.status().to_string();
  EXPECT_EQ(old->files[0].digest, "00");
  EXPECT_EQ(old->digest_algorithm, DigestAlgorithm::kSha256);

  m.format_version = kManifestFormatVersion;
  m.chunk_bytes = 2;
  m.files = {{.path = "a.img", .size = 5, .digest_chunks = {"01", "02"}, .mode = 0600}};
  auto short_list = manifest_from_json(manifest_to_json(m));  // 5 bytes need 3 chunks of 2
  ASSERT_FALSE(short_list.ok());
  EXPECT_EQ(short_list.status().reason(), "SnapshotManifestInvalid");
  EXPECT_NE(short_list.status().message().find("lists 2 chunk digests for 5 bytes"),
            std::string::npos)
      << short_list.status().message();

  m.files[0].digest_chunks.push_back("03");
  std::string both = manifest_to_json(m);
  both.insert(both.find("\"size\": 5"), "\"digest\": \"ff\", ");  // which one would count?
  auto ambiguous = manifest_from_json(both);
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.status().message().find("exactly one of digest and digest_chunks"),
            std::string::npos)
      << ambiguous.status().message();
}

// Format 3 names its digest; a name this agent does not know is refused as
// unsupported (an agent upgrade away), not taken for corruption.
TEST(ManifestTest, NamesItsDigestAlgorithmAndRefusesOnesItDoesNotKnow) {
  Manifest m;
  m.meta = meta_for("mig-1");
  m.files = {{.path = "a.img", .size = 3, .digest = "00", .mode = 0600}};
  for (auto algorithm : {DigestAlgorithm::kBlake3, DigestAlgorithm::kSha256}) {
    m.digest_algorithm = algorithm;
    auto back = manifest_from_json(manifest_to_json(m));
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->digest_algorithm, algorithm);
    EXPECT_EQ(back->files[0].digest, "00");
  }
  std::string text = manifest_to_json(m);
  const std::string named = "\"digest_algorithm\": \"sha256\"";
  ASSERT_NE(text.find(named), std::string::npos) << text;
  std::string unknown = text;
  unknown.replace(unknown.find(named), named.size(), "\"digest_algorithm\": \"k12\"");
  auto refused = manifest_from_json(unknown);
  EXPECT_EQ(refused.status().code(), Code::kUnsupported);
  EXPECT_EQ(refused.status().reason(), "SnapshotFormatUnsupported");
  EXPECT_NE(refused.status().message().find("digest_algorithm 'k12' is not supported"),
            std::string::npos)
      << refused.status().message();
  std::string unnamed = text;
  unnamed.replace(unnamed.find(named), named.size(), "\"x\": 0");
  EXPECT_EQ(manifest_from_json(unnamed).status().reason(), "SnapshotManifestInvalid");
}

// An agent configured for SHA-256 (--snapshot-digest sha256), and a
// snapshot an older agent published (format 2, SHA-256): any store reads
// them by the manifest's algorithm, and a flipped byte is still caught.
TEST_F(ChunkedSnapshotTest, SnapshotsListedWithSha256AreVerifiedByTheirOwnAlgorithm) {
  SnapshotStore sha256_store{
      tmp_.path(), {.digest_chunk_bytes = kChunk, .digest_algorithm = DigestAlgorithm::kSha256}};
  Manifest m = publish(sha256_store, "mig-1", "app", pages_.size());
  EXPECT_EQ(m.digest_algorithm, DigestAlgorithm::kSha256);
  std::vector<std::string> want;
  for (size_t off = 0; off < pages_.size(); off += kChunk) {
    Digester sha(DigestAlgorithm::kSha256);
    sha.update(pages_.data() + off, std::min<size_t>(kChunk, pages_.size() - off));
    want.push_back(sha.hex_digest());
  }
  EXPECT_EQ(m.files[1].digest_chunks, want);
  EXPECT_NE(want, chunk_digests(pages_)) << "BLAKE3 and SHA-256 digests differ";
  ASSERT_TRUE(store_.open("mig-1", "app", expected_, Verify::kFull).ok());

  // The same snapshot as a format-2 agent wrote it.
  const std::string manifest_path = tmp_.path() + "/mig-1/app/manifest.json";
  m.format_version = 2;
  write_file(manifest_path, manifest_to_json(m));
  ASSERT_NE(read_file(manifest_path).find("\"sha256_chunks\""), std::string::npos);
  auto v2 = store_.open("mig-1", "app", expected_, Verify::kFull);
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ(v2->manifest.format_version, 2);
  v2 = Result<VerifiedSnapshot>(internal_error("released"));  // drop its lease

  flip(tmp_.path() + "/mig-1/app/pages-1.img", 5);
  auto refused = store_.open("mig-1", "app", expected_, Verify::kFull);
  EXPECT_EQ(refused.status().reason(), "SnapshotChecksumMismatch");
  EXPECT_NE(refused.status().message().find("corrupted in bytes 0-65535: sha256 "),
            std::string::npos)
      << refused.status().message();
}

// Progress begun with another algorithm cannot be continued: hash_files
// reads that chunk again.
TEST(HashFilesTest, ProgressOfAnotherAlgorithmIsNotUsed) {
  TempDir tmp;
  constexpr std::uint64_t kChunk = 4096;
  const std::string data = pattern(2 * kChunk, 4);
  write_file(tmp.path() + "/pages-1.img", data);
  std::vector<ChunkProgress> progress(1);
  progress[0].partial = std::make_shared<Digester>(DigestAlgorithm::kSha256);
  progress[0].partial->update(data.data(), 100);
  progress[0].bytes = 100;
  auto digests = hash_files(
      tmp.path(), {{.path = "pages-1.img", .chunk_bytes = kChunk, .progress = std::move(progress)}},
      DigestAlgorithm::kBlake3);
  ASSERT_TRUE(digests.ok()) << digests.status().to_string();
  Digester first(DigestAlgorithm::kBlake3);
  first.update(data.data(), kChunk);
  EXPECT_EQ((*digests)[0].digests.at(0), first.hex_digest());
}

// Not a pass/fail benchmark: prints the hashing throughput on this machine
// (recorded in the lead's report), while checking the digests are right.
TEST(HashThroughputTest, PrintsMegabytesPerSecond) {
  TempDir tmp;
  const size_t kBig = 256u << 20;
  std::string data = pattern(kBig, 7);
  write_file(tmp.path() + "/pages-1.img", data);
  struct Want {
    std::string whole;
    std::vector<std::string> chunks;
  };
  std::map<DigestAlgorithm, Want> wants;
  for (auto algorithm : {DigestAlgorithm::kBlake3, DigestAlgorithm::kSha256}) {
    Digester reference(algorithm);
    reference.update(data.data(), data.size());
    wants[algorithm].whole = reference.hex_digest();
    for (size_t off = 0; off < kBig; off += kDigestChunkBytes) {
      Digester chunk(algorithm);
      chunk.update(data.data() + off, kDigestChunkBytes);
      wants[algorithm].chunks.push_back(chunk.hex_digest());
    }
  }
  const std::vector<std::string>& want_chunks = wants[kDefaultDigestAlgorithm].chunks;
  data.clear();
  data.shrink_to_fit();

  auto timed = [&](DigestAlgorithm algorithm, std::uint64_t chunk_bytes) {
    auto start = std::chrono::steady_clock::now();
    auto digests =
        hash_files(tmp.path(), {{.path = "pages-1.img", .chunk_bytes = chunk_bytes}}, algorithm);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(digests.ok());
    if (digests.ok()) {
      EXPECT_EQ((*digests)[0].digests, chunk_bytes == 0
                                           ? std::vector<std::string>{wants[algorithm].whole}
                                           : wants[algorithm].chunks);
    }
    return static_cast<double>(kBig) / (1 << 20) / secs;
  };
  for (auto algorithm : {DigestAlgorithm::kBlake3, DigestAlgorithm::kSha256}) {
    const std::string name(digest_algorithm_name(algorithm));
    double whole = timed(algorithm, 0);
    double chunked = timed(algorithm, kDigestChunkBytes);
    std::printf("[ %-7s ] 1 file x 256 MiB, whole file:       %.0f MB/s\n", name.c_str(), whole);
    std::printf("[ %-7s ] 1 file x 256 MiB, 64 MiB chunks:    %.0f MB/s (%u CPUs)\n", name.c_str(),
                chunked, std::thread::hardware_concurrency());
    RecordProperty(name + "_MBps_whole_file", static_cast<int>(whole));
    RecordProperty(name + "_MBps_chunked", static_cast<int>(chunked));
  }

  // Publish end to end: hash + fsync + manifest + rename.
  SnapshotStore store(tmp.path() + "/store");
  ASSERT_EQ(::mkdir((tmp.path() + "/store").c_str(), 0700), 0);
  auto writer = store.begin(meta_for("bench"));
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(
      ::rename((tmp.path() + "/pages-1.img").c_str(), ((*writer)->dir() + "/pages-1.img").c_str()),
      0);
  auto start = std::chrono::steady_clock::now();
  auto manifest = (*writer)->publish();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(manifest.ok()) << manifest.status().to_string();
  EXPECT_EQ(manifest->files[0].digest_chunks, want_chunks);
  std::printf("[ publish ] 256 MiB (hash + fsync + rename): %.0f MB/s\n",
              static_cast<double>(kBig) / (1 << 20) / secs);
  start = std::chrono::steady_clock::now();
  ASSERT_TRUE(store.open("bench", "app", meta_for("bench").binding, Verify::kFull).ok());
  secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ verify  ] 256 MiB full verify: %.0f MB/s\n",
              static_cast<double>(kBig) / (1 << 20) / secs);
}

}  // namespace
}  // namespace ferry::store
