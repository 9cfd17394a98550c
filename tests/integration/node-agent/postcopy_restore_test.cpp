// PostCopy migration of a real runc container through ferry-runc, zdtm
// style (DESIGN.md §4): the frozen source is dumped without its memory and
// serves its pages from CRIU's page server; the target restores at once with
// a `criu lazy-pages` daemon fetching pages on demand. The restored
// container must answer while pages are still in flight, and its memory
// must checksum right once the transfer is over; the source stays frozen
// until then, and nothing (CRIU helpers, daemons, mounts) is left behind.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "checkpoint/criu_features.h"
#include "checkpoint/engine.h"
#include "free_port.h"
#include "rootfs/diff.h"
#include "runc_harness.h"
#include "runtime/lazy_pages_guard.h"
#include "runtime/restore_source.h"
#include "store/snapshot_store.h"

#ifndef FERRY_RUNC_BIN
#error "FERRY_RUNC_BIN must name the ferry-runc binary"
#endif
#ifndef FERRY_STATEKEEPER_BIN
#error "FERRY_STATEKEEPER_BIN must name the statekeeper binary"
#endif

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Pids of processes whose command line mentions `needle` (our temp dir).
std::vector<int> pids_mentioning(const std::string& needle) {
  std::vector<int> pids;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos && std::stoi(name) != getpid()) {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

// The source's runc and its CRIU serving pages: runc checkpoint names the
// work directory, and CRIU (`criu swrk`) is its child.
std::vector<int> page_servers(const std::string& work_dir) {
  std::vector<int> servers;
  for (int runc_pid : pids_mentioning(work_dir)) {
    servers.push_back(runc_pid);
    std::error_code ec;
    for (const auto& task :
         fs::directory_iterator("/proc/" + std::to_string(runc_pid) + "/task", ec)) {
      std::ifstream children(task.path() / "children");
      for (int child; children >> child;) servers.push_back(child);
    }
  }
  return servers;
}

// Mount points under `dir` (CRIU's cgroup yards, our overlays).
std::vector<std::string> mounts_under(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string skip, mount_point;
    fields >> skip >> skip >> skip >> skip >> mount_point;
    if (mount_point.rfind(dir + "/", 0) == 0) out.push_back(mount_point);
  }
  return out;
}

// True when no task of a process in `netns` can run user code: each is
// frozen by its cgroup or stopped under ptrace (CRIU's page server holds
// them so during a lazy transfer). A cgroup the kernel reports frozen
// covers all its tasks; that is the only sign on cgroup v2, whose frozen
// tasks sleep in state S.
bool all_tasks_stopped(const std::string& netns) {
  auto r = process::run({"ip", "netns", "pids", netns});
  if (!r.ok() || r->out.empty()) return false;
  std::istringstream pids(r->out);
  for (std::string pid; pids >> pid;) {
    if (cgroup_freezer(std::stoi(pid)) == "frozen") continue;
    for (const auto& task : fs::directory_iterator("/proc/" + pid + "/task")) {
      std::ifstream in(task.path() / "status");
      std::string line;
      while (std::getline(in, line) && line.rfind("State:", 0) != 0) {
      }
      // t: tracing stop, T: stopped, D: the freezer's uninterruptible sleep.
      char state = line.size() > 7 ? line[7] : '?';
      if (state != 't' && state != 'T' && state != 'D') return false;
    }
  }
  return true;
}

// A source container that answered INCR (COUNT 1), dumped lazily: its
// CRIU serves pages. Members go in reverse order: the transfer first.
struct LazySource {
  std::unique_ptr<NetNs> ns;
  std::unique_ptr<OverlayRootfs> rootfs;
  std::unique_ptr<ShimContainer> container;
  std::unique_ptr<store::SnapshotStore> snapshots;
  std::string sum_before;
  std::string page_server;  // "127.0.0.1:port"
  std::unique_ptr<checkpoint::RunningCheckpoint> transfer;
};

class PostCopyRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-postcopy-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    prepare_lab(dir_, FERRY_STATEKEEPER_BIN);
    if (expected_cgroup_version() != 0) {
      ASSERT_EQ(cgroup_version(), expected_cgroup_version()) << "/sys/fs/cgroup is not the "
                                                                "hierarchy this run is for";
    }
    tag_ = "pc" + std::to_string(getpid());
  }
  // Whatever a failed run left: CRIU helpers and daemons first (a task
  // stuck on a page fault waits for them), then mounts.
  void TearDown() override {
    for (int pid : pids_mentioning(dir_)) kill(pid, SIGKILL);
    for (int i = 0; i < 100 && !pids_mentioning(dir_).empty(); ++i) {
      std::this_thread::sleep_for(20ms);
    }
    auto mounts = mounts_under(dir_);
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::string read(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  void start_lazy_source(const std::string& name, checkpoint::CheckpointEngine& engine,
                         LazySource& src, int mem_mib = 64, bool read_mode = false);
  void expect_rollback_intact(checkpoint::CheckpointEngine& engine, LazySource& src);

  std::string dir_, tag_;
  std::string migration_ = "m-" + std::to_string(getpid());
  PodIdentity source_pod_{.ns = "default", .name = "src", .uid = "uid-src"};
  PodIdentity target_pod_{.ns = "default", .name = "dst", .uid = "uid-dst"};
};

// Both ways CRIU can keep the pages it serves: read from the frozen source
// on request (our CRIU patch, what the agent uses where CRIU has it) and
// spliced into pipes while frozen (stock CRIU).
class PostCopyModeTest : public PostCopyRestoreTest, public ::testing::WithParamInterface<bool> {
 protected:
  bool read_mode() const { return GetParam(); }
};

TEST_P(PostCopyModeTest, AnswersBeforeItsPagesArrivedAndChecksumsAfter1GiB) {
  const int mem_mib = 1024;
  if (read_mode()) {
    auto features = checkpoint::detect_criu_features(tool("criu"));
    ASSERT_TRUE(features.ok()) << features.status().to_string();
    if (!features->lazy_dump_read) {
      GTEST_SKIP() << "this CRIU (" << features->criu_version
                   << ") lacks our lazy-dump-mode patch (the fallback pin?): read mode untested";
    }
  }
  checkpoint::RuncCli runc(tool("runc"), dir_ + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  {
    // Source pod.
    NetNs ns_a("pa-" + tag_);
    OverlayRootfs rootfs_a(dir_ + "/image", dir_ + "/rootfs-a");
    ASSERT_TRUE(rootfs_a.mounted());
    write_bundle(dir_ + "/bundle-a", rootfs_a.merged(), ns_a, mem_mib, source_pod_);
    ShimContainer src("a-" + tag_, dir_ + "/bundle-a", dir_ + "/runc", FERRY_RUNC_BIN);
    ASSERT_EQ(src.create_and_start(), 0) << read(src.log_path());
    ASSERT_TRUE(wait_until([&] { return ask(ns_a.name(), "PID") == "pid 1"; }, 120s))
        << src.output();
    for (int i = 0; i < 3; ++i) ask(ns_a.name(), "INCR");
    std::string sum_before = ask(ns_a.name(), "SUM");
    ASSERT_EQ(sum_before.substr(4, 16), sum_before.substr(30, 16)) << sum_before;
    ASSERT_EQ(ask(ns_a.name(), "CHECK"), "check ok");
    std::ofstream(rootfs_a.merged() + "/etc/new.conf") << "created in the container";

    // Lazy dump: everything but memory into the store, published at once.
    store::SnapshotStore snapshots(dir_ + "/snapshots", {.durable_data = false});
    auto writer = snapshots.begin({.binding = {.namespace_name = target_pod_.ns,
                                               .pod_name = target_pod_.name,
                                               .pod_uid = target_pod_.uid,
                                               .container_name = target_pod_.container,
                                               .migration_uid = migration_},
                                   .criu_version = "4.2.1",
                                   .runtime = {"runc", "1.4.3"}});
    ASSERT_TRUE(writer.ok()) << writer.status().to_string();
    int port = *free_port();
    ASSERT_GT(port, 0);
    auto dumped = engine.dump_lazy({.container_id = src.id(),
                                    .work_dir = dir_ + "/work-a",
                                    .page_server = "127.0.0.1:" + std::to_string(port),
                                    .tcp = checkpoint::TcpMode::kEstablished,
                                    .network_lock = agent_network_lock(),
                                    .before_publish = [&](store::SnapshotWriter& w) -> Status {
                                      auto diff = rootfs::capture_upper_dir(
                                          rootfs_a.upper(),
                                          w.dir() + "/" + std::string(runtime::kRootfsDiffDir));
                                      return diff.ok() ? Status() : diff.status();
                                    },
                                    .read_pages_on_request = read_mode()},
                                   **writer);
    ASSERT_TRUE(dumped.ok()) << dumped.status().to_string();
    auto freeze_start = Clock::now();
    ASSERT_EQ(dumped->pages_read_on_request, read_mode());
    // CRIU itself says which way it serves (its dump.log in the work dir).
    const bool criu_reads =
        read(dir_ + "/work-a/dump.log")
            .find("Lazy pages are read from the frozen tasks on request") != std::string::npos;
    EXPECT_EQ(criu_reads, read_mode());
    EXPECT_TRUE(dumped->encrypted) << "pages travel only over TLS";
    std::printf("freeze %.3f s, lazy dump %.3f s, publish %.3f s, %.2f MiB of images\n",
                dumped->freeze.count(), dumped->dump.count(), dumped->publish.count(),
                dumped->image_bytes / 1048576.0);
    EXPECT_LT(dumped->image_bytes, 16u << 20) << "memory is not in the snapshot";
    ASSERT_TRUE(all_tasks_stopped(ns_a.name())) << "the source must not run";
    checkpoint::RunningCheckpoint& transfer = *dumped->transfer;
    EXPECT_FALSE(transfer.finished()) << "nobody fetched pages yet";

    // Target pod: restore through ferry-runc as the shim would.
    NetNs ns_b("pb-" + tag_);
    OverlayRootfs rootfs_b(dir_ + "/image", dir_ + "/rootfs-b");
    write_bundle(dir_ + "/bundle-b", rootfs_b.merged(), ns_b, mem_mib, target_pod_, migration_);
    const std::string work_b = dir_ + "/state/work/b-" + tag_;
    ShimContainer dst("b-" + tag_, dir_ + "/bundle-b", dir_ + "/runc", FERRY_RUNC_BIN);
    ASSERT_EQ(dst.create_and_start(), 0)
        << read(dst.log_path()) << read(work_b + "/restore.log") << read(work_b + "/lazy-pages.log")
        << transfer.wait(0ms).to_string();

    // It answers while its pages are still in flight.
    std::string count = ask(ns_b.name(), "COUNT");
    bool still_transferring = !transfer.finished();
    double answered = std::chrono::duration<double>(Clock::now() - freeze_start).count();
    std::printf("restored container answered %.3f s after the lazy dump returned\n", answered);
    EXPECT_EQ(count, "count 3");
    EXPECT_TRUE(still_transferring) << "the page transfer ended before the container answered";
    EXPECT_TRUE(all_tasks_stopped(ns_a.name())) << "the source stays stopped during the transfer";
    EXPECT_TRUE(fs::exists(work_b + "/lazy-pages.socket") ||
                fs::exists(work_b + "/lazy-pages.pid"));

    // The transfer completes; memory is right.
    Status transferred = transfer.wait(5min);
    double total = std::chrono::duration<double>(Clock::now() - freeze_start).count();
    ASSERT_TRUE(transferred.ok()) << transferred.to_string() << "\n"
                                  << read(work_b + "/lazy-pages.log");
    std::printf("page transfer finished %.3f s after the lazy dump returned\n", total);
    // The pages went over TLS: the page server logged the handshake, and
    // the transfer succeeding means each end then accepted the other's
    // certificate (criu/tls.c verifies the peer right after it).
    EXPECT_NE(read(dir_ + "/work-a/dump.log").find("TLS handshake completed"), std::string::npos)
        << "the page server did not use TLS";
    EXPECT_EQ(src.state_status(), "paused") << "CRIU froze the source's cgroup again";
    EXPECT_EQ(src.freezer(), "frozen") << "cgroup v" << cgroup_version();
    EXPECT_TRUE(all_tasks_stopped(ns_a.name()));
    EXPECT_EQ(ask(ns_b.name(), "SUM"), sum_before);
    EXPECT_EQ(ask(ns_b.name(), "CHECK"), "check ok");
    EXPECT_EQ(ask(ns_b.name(), "PID"), "pid 1");
    EXPECT_EQ(ask(ns_b.name(), "LOOP"), "loop ok");
    EXPECT_EQ(read(rootfs_b.merged() + "/etc/new.conf"), "created in the container");
    // The lazy-pages daemon is done once every page arrived.
    int daemon_pid = 0;
    std::istringstream(read(work_b + "/lazy-pages.pid")) >> daemon_pid;
    ASSERT_GT(daemon_pid, 0);
    EXPECT_TRUE(wait_until([&] { return kill(daemon_pid, 0) != 0; }, 30s))
        << "criu lazy-pages still running";

    // Exactly one copy runs: kill the source frozen.
    Status killed = engine.kill_frozen(src.id());
    ASSERT_TRUE(killed.ok()) << killed.to_string();
    EXPECT_EQ(src.state_status(), "stopped");
    EXPECT_EQ(ask(ns_b.name(), "COUNT"), "count 3");
    ASSERT_TRUE(run_ok({FERRY_RUNC_BIN, "--root", dir_ + "/runc", "kill", dst.id(), "KILL"}));
    EXPECT_TRUE(wait_until([&] { return dst.state_status() == "stopped"; }, 10s));
    ASSERT_TRUE(run_ok({FERRY_RUNC_BIN, "--root", dir_ + "/runc", "delete", dst.id()}));
    EXPECT_EQ(dst.state_status(), "absent");
  }
  // Every helper is gone, and only nothing is mounted under the test dir.
  EXPECT_EQ(pids_mentioning(dir_), std::vector<int>{}) << "stray runc/CRIU processes";
  EXPECT_EQ(mounts_under(dir_), std::vector<std::string>{}) << "stray mounts";
}

INSTANTIATE_TEST_SUITE_P(CriuModes, PostCopyModeTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& mode) {
                           return mode.param ? "ReadOnRequest" : "StockSplice";
                         });

void PostCopyRestoreTest::start_lazy_source(const std::string& name,
                                            checkpoint::CheckpointEngine& engine, LazySource& src,
                                            int mem_mib, bool read_mode) {
  src.ns = std::make_unique<NetNs>(name + "-" + tag_);
  src.rootfs = std::make_unique<OverlayRootfs>(dir_ + "/image", dir_ + "/rootfs-a");
  ASSERT_TRUE(src.rootfs->mounted());
  write_bundle(dir_ + "/bundle-a", src.rootfs->merged(), *src.ns, mem_mib, source_pod_);
  src.container = std::make_unique<ShimContainer>(name + "-" + tag_, dir_ + "/bundle-a",
                                                  dir_ + "/runc", FERRY_RUNC_BIN);
  ASSERT_EQ(src.container->create_and_start(), 0) << read(src.container->log_path());
  const std::string ns = src.ns->name();
  ASSERT_TRUE(wait_until([&] { return ask(ns, "PID") == "pid 1"; }, 120s));
  ask(ns, "INCR");
  src.sum_before = ask(ns, "SUM");
  src.snapshots = std::make_unique<store::SnapshotStore>(
      dir_ + "/snapshots", store::StoreOptions{.durable_data = false});
  auto writer = src.snapshots->begin({.binding = {.namespace_name = target_pod_.ns,
                                                  .pod_name = target_pod_.name,
                                                  .pod_uid = target_pod_.uid,
                                                  .container_name = target_pod_.container,
                                                  .migration_uid = migration_}});
  ASSERT_TRUE(writer.ok());
  src.page_server = "127.0.0.1:" + std::to_string(*free_port());
  auto dumped = engine.dump_lazy({.container_id = src.container->id(),
                                  .work_dir = dir_ + "/work-a",
                                  .page_server = src.page_server,
                                  .tcp = checkpoint::TcpMode::kEstablished,
                                  .before_publish = [&](store::SnapshotWriter& w) -> Status {
                                    auto diff = rootfs::capture_upper_dir(
                                        src.rootfs->upper(),
                                        w.dir() + "/" + std::string(runtime::kRootfsDiffDir));
                                    return diff.ok() ? Status() : diff.status();
                                  },
                                  .read_pages_on_request = read_mode},
                                 **writer);
  ASSERT_TRUE(dumped.ok()) << dumped.status().to_string();
  src.transfer = std::move(dumped->transfer);
}

// After a lost transfer: the source thaws (a rollback) with its state.
void PostCopyRestoreTest::expect_rollback_intact(checkpoint::CheckpointEngine& engine,
                                                 LazySource& src) {
  ASSERT_TRUE(engine.thaw(src.container->id()).ok());
  EXPECT_EQ(ask(src.ns->name(), "SUM"), src.sum_before);
  EXPECT_EQ(ask(src.ns->name(), "COUNT"), "count 1");
  EXPECT_EQ(ask(src.ns->name(), "CHECK"), "check ok");
}

// A transfer given up before any target connected (the target node failed):
// dropping the handle stops runc and CRIU, the source stays frozen (not
// left running next to a copy) and a rollback thaws it intact.
TEST_F(PostCopyRestoreTest, AbandonedTransferLeavesTheSourceFrozenAndNothingRunning) {
  checkpoint::RuncCli runc(tool("runc"), dir_ + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  LazySource src;
  ASSERT_NO_FATAL_FAILURE(start_lazy_source("pa", engine, src));
  EXPECT_FALSE(pids_mentioning(dir_ + "/work-a").empty()) << "runc and CRIU serve pages";
  src.transfer.reset();
  EXPECT_EQ(pids_mentioning(dir_ + "/work-a"), std::vector<int>{}) << "runc/CRIU left running";
  EXPECT_EQ(src.container->state_status(), "paused");
  EXPECT_EQ(src.container->freezer(), "frozen") << "cgroup v" << cgroup_version();
  EXPECT_TRUE(all_tasks_stopped(src.ns->name()));
  expect_rollback_intact(engine, src);
}

// Anyone who can reach the page server's port is not given the pages: a
// client without this migration's certificate (here, one asking in clear
// text, as stock CRIU's protocol would) gets no page, the server gives up,
// and the source, still frozen, rolls back intact.
TEST_F(PostCopyRestoreTest, AClientWithoutTheMigrationsCertificateGetsNoPages) {
  checkpoint::RuncCli runc(tool("runc"), dir_ + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  LazySource src;
  ASSERT_NO_FATAL_FAILURE(start_lazy_source("pt", engine, src));
  const auto colon = src.page_server.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(src.page_server.substr(colon + 1))));
  ASSERT_EQ(inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr), 1);
  int sk = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sk, 0);
  ASSERT_EQ(connect(sk, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
  // CRIU's page_server_iov (criu/page-xfer.c): PS_IOV_GET (7), one page
  // at the bottom of a typical heap, of task 1's pagemap (id << 8 | PID).
  struct {
    uint32_t cmd;
    uint64_t nr_pages, vaddr, dst_id;
  } get = {7, 1, 0x555555554000ULL, (uint64_t{1} << 8) | 1};
  ASSERT_EQ(send(sk, &get, sizeof get, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof get));
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[8192];
  for (ssize_t n; (n = recv(sk, buf, sizeof buf, 0)) > 0;) got.append(buf, n);
  close(sk);
  EXPECT_LT(got.size(), 4096u) << "a page was served to a client without the certificate";
  Status ended = src.transfer->wait(30s);
  EXPECT_FALSE(ended.ok()) << "the page server should give up on that client";
  EXPECT_NE(read(dir_ + "/work-a/dump.log").find("TLS handshake failed"), std::string::npos)
      << read(dir_ + "/work-a/dump.log");
  EXPECT_EQ(src.container->freezer(), "frozen") << "cgroup v" << cgroup_version();
  src.transfer.reset();
  expect_rollback_intact(engine, src);
}

// The source's CRIU killed while it serves pages, as when the agent's pod
// is restarted and every process in its cgroup dies with it: the tasks CRIU
// held with ptrace are let go, and they must stay frozen, because a target
// may already run the restored copy. A rollback then thaws the source
// intact (removing the network lock the dead CRIU left).
TEST_F(PostCopyRestoreTest, KilledPageServerLeavesTheSourceFrozen) {
  checkpoint::RuncCli runc(tool("runc"), dir_ + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  LazySource src;
  ASSERT_NO_FATAL_FAILURE(start_lazy_source("pk", engine, src));
  std::vector<int> servers = page_servers(dir_ + "/work-a");
  ASSERT_GE(servers.size(), 2u) << "runc and CRIU serve pages";
  for (int pid : servers) ASSERT_EQ(::kill(pid, SIGKILL), 0) << pid;
  ASSERT_TRUE(src.transfer->wait(10s).code() != Code::kDeadlineExceeded);
  ASSERT_TRUE(wait_until(
      [&] {
        return std::ranges::all_of(servers, [](int pid) {
          const char state = process_state(pid);  // a zombie runs nothing
          return state == 'Z' || state == 'X';
        });
      },
      10s))
      << "runc or CRIU outlived SIGKILL";
  // Given the time to run, a task let go into a thawed cgroup would.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(src.container->freezer(), "frozen") << "cgroup v" << cgroup_version();
  EXPECT_TRUE(all_tasks_stopped(src.ns->name())) << "a source task runs next to the restored copy";
  src.transfer.reset();
  expect_rollback_intact(engine, src);
}

// The source's page server dies after the target restored and before every
// page arrived: the target's `criu lazy-pages` fails, and the kernel would
// serve the missing pages as zeros to a restored container left running.
// ferry-runc's guard kills that container instead (lazy_pages_guard.h), and
// the source, still frozen, rolls back intact.
TEST_F(PostCopyRestoreTest, ATransferLostAfterTheRestoreKillsTheRestoredCopy) {
  checkpoint::RuncCli runc(tool("runc"), dir_ + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  LazySource src;
  // 1 GiB: its transfer takes long enough (~1.3 s here) to be cut. In read
  // mode where CRIU has it (the agent's choice).
  auto features = checkpoint::detect_criu_features(tool("criu"));
  ASSERT_TRUE(features.ok()) << features.status().to_string();
  ASSERT_NO_FATAL_FAILURE(start_lazy_source("pl", engine, src, 1024, features->lazy_dump_read));
  {
    NetNs ns_b("pm-" + tag_);
    OverlayRootfs rootfs_b(dir_ + "/image", dir_ + "/rootfs-b");
    write_bundle(dir_ + "/bundle-b", rootfs_b.merged(), ns_b, 1024, target_pod_, migration_);
    const std::string work_b = dir_ + "/state/work/b-" + tag_;
    ShimContainer dst("b-" + tag_, dir_ + "/bundle-b", dir_ + "/runc", FERRY_RUNC_BIN);
    ASSERT_EQ(dst.create_and_start(), 0) << read(dst.log_path()) << read(work_b + "/restore.log")
                                         << read(work_b + "/lazy-pages.log");
    ASSERT_FALSE(src.transfer->finished()) << "the transfer ended before it could be cut";
    // Cut it: the source's runc and CRIU die, as with the source agent's pod.
    std::vector<int> servers = page_servers(dir_ + "/work-a");
    ASSERT_GE(servers.size(), 2u) << "runc and CRIU serve pages";
    for (int pid : servers) ::kill(pid, SIGKILL);
    EXPECT_TRUE(wait_until([&] { return dst.state_status() == "stopped"; }, 30s))
        << "the restored copy runs on with missing pages: " << dst.state_status() << "\n"
        << read(work_b + "/lazy-pages.log");
    EXPECT_NE(read(work_b + "/" + std::string(runtime::kLazyPagesFailedFile))
                  .find("before every page arrived: killed the restored container"),
              std::string::npos)
        << read(work_b + "/" + std::string(runtime::kLazyPagesFailedFile));
    ASSERT_TRUE(run_ok({FERRY_RUNC_BIN, "--root", dir_ + "/runc", "delete", "--force", dst.id()}));
  }
  src.transfer.reset();
  EXPECT_EQ(src.container->freezer(), "frozen") << "cgroup v" << cgroup_version();
  expect_rollback_intact(engine, src);
}

}  // namespace
}  // namespace ferry::testing
