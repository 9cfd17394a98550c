#include "checkpoint/engine.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "api/annotations.h"
#include "checkpoint/page_transfer_tls.h"
#include "pki/pki.h"

namespace ferry::checkpoint {
namespace {

// An in-memory runtime: containers with a status, and the calls made.
class FakeRuntime : public OciRuntime {
 public:
  std::map<std::string, ContainerState> containers;
  std::vector<std::string> calls;
  Status checkpoint_result;

  Result<ContainerState> state(const std::string& id) override {
    auto it = containers.find(id);
    if (it == containers.end()) return not_found(id);
    return it->second;
  }
  // The results of the next pause calls, in order (then: success).
  std::vector<Status> pause_results;
  Status pause(const std::string& id) override {
    calls.push_back("pause");
    if (!pause_results.empty()) {
      Status s = pause_results.front();
      pause_results.erase(pause_results.begin());
      if (!s.ok()) return s;
    }
    if (containers[id].status == "paused") {  // as runc: ErrNotRunning
      return Status(Code::kFailedPrecondition, "container not running");
    }
    containers[id].status = "paused";
    return {};
  }
  // A lazy checkpoint's CRIU leaves the cgroup as it found it (frozen)
  // instead of thawing it once it holds the tasks.
  bool lazy_leaves_frozen = false;
  Status resume(const std::string& id) override {
    calls.push_back("resume");
    auto& c = containers[id];
    c.status = killed_ ? "stopped" : "running";
    return {};
  }
  Status kill_all(const std::string&, int signal) override {
    calls.push_back("kill " + std::to_string(signal));
    killed_ = true;
    return {};
  }
  Status checkpoint(const std::string&, const CheckpointOptions& o) override {
    calls.push_back(std::string("checkpoint") + (o.leave_running ? " leave-running" : ""));
    return checkpoint_result;
  }
  Status remove(const std::string&, bool) override { return {}; }
  Result<bool> earlier_checkpoint_running(const std::string&) override { return false; }

  // PostCopy: a background checkpoint that writes `lazy_images`, signals
  // ready on the status fd unless `lazy_result` is an error, and then runs
  // until `lazy_done` (shared with the handle) is set.
  std::map<std::string, std::string> lazy_images = {{"inventory.img", "inv"},
                                                    {"pagemap-1.img", "map"}};
  Status lazy_result;
  std::shared_ptr<bool> lazy_done = std::make_shared<bool>(false);
  std::shared_ptr<bool> lazy_destroyed = std::make_shared<bool>(false);
  class FakeRunning : public RunningCheckpoint {
   public:
    FakeRunning(Status result, std::shared_ptr<bool> done, std::shared_ptr<bool> destroyed)
        : result_(std::move(result)), done_(std::move(done)), destroyed_(std::move(destroyed)) {}
    ~FakeRunning() override { *destroyed_ = true; }
    Status wait(std::chrono::milliseconds) override {
      if (!result_.ok() || *done_) return result_;
      return Status(Code::kDeadlineExceeded, "serving");
    }

   private:
    Status result_;
    std::shared_ptr<bool> done_, destroyed_;
  };
  Result<std::unique_ptr<RunningCheckpoint>> start_checkpoint(const std::string& id,
                                                              const CheckpointOptions& o) override {
    calls.push_back("start-checkpoint" + std::string(o.lazy_pages ? " lazy " : " ") +
                    o.page_server + (o.leave_running ? " leave-running" : ""));
    for (const auto& [name, data] : lazy_images) std::ofstream(o.image_dir + "/" + name) << data;
    if (lazy_result.ok()) {
      char ready = 0;
      EXPECT_EQ(write(o.status_fd, &ready, 1), 1);
      if (!lazy_leaves_frozen) {
        containers[id].status = "running";  // CRIU holds the tasks by ptrace, cgroup thawed
      }
    }
    return std::unique_ptr<RunningCheckpoint>(
        new FakeRunning(lazy_result, lazy_done, lazy_destroyed));
  }

 private:
  bool killed_ = false;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { rt_.containers["c"] = {.id = "c", .pid = 42, .status = "running"}; }
  FakeRuntime rt_;
  // What the network-lock check finds (release_criu_network_lock's answer).
  Result<std::string> network_lock_ = std::string();
  CheckpointEngine engine_{rt_, [this](int pid) -> Result<std::string> {
                             rt_.calls.push_back("release-network-lock " + std::to_string(pid));
                             return network_lock_;
                           }};
};

TEST_F(EngineTest, DumpFreezesAndLeavesTheSourceFrozen) {
  auto r = engine_.dump(
      {.container_id = "c", .image_dir = "/nonexistent", .tcp = TcpMode::kEstablished});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(rt_.calls, (std::vector<std::string>{"pause", "checkpoint leave-running"}));
  EXPECT_EQ(rt_.containers["c"].status, "paused");
}

TEST_F(EngineTest, FailedDumpKeepsTheSourceFrozenForTheCallerToDecide) {
  rt_.checkpoint_result = Status(Code::kInternal, "criu failed", "CheckpointFailed");
  auto r = engine_.dump({.container_id = "c", .image_dir = "/x", .tcp = TcpMode::kEstablished});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "CheckpointFailed");
  EXPECT_EQ(rt_.containers["c"].status, "paused");
  EXPECT_TRUE(engine_.thaw("c").ok());
  EXPECT_EQ(rt_.containers["c"].status, "running");
}

// A CRIU killed mid-dump leaves its network lock; a rollback removes it
// before the tasks run, or they would run cut off from every client.
TEST_F(EngineTest, ThawRemovesALeftoverNetworkLockBeforeTheTasksRun) {
  rt_.containers["c"].status = "paused";
  network_lock_ = std::string("iptables:INPUT->CRIU iptables:OUTPUT->CRIU iptables:CRIU");
  ASSERT_TRUE(engine_.thaw("c").ok());
  EXPECT_EQ(rt_.calls, (std::vector<std::string>{"release-network-lock 42", "resume"}));
  EXPECT_EQ(rt_.containers["c"].status, "running");
}

// CRIU thaws the cgroup while it holds the tasks with ptrace; killed, it
// lets them run with its lock still in place.
TEST_F(EngineTest, ThawOfARunningContainerStillRemovesALeftoverLock) {
  network_lock_ = std::string("iptables:INPUT->CRIU iptables:CRIU");
  ASSERT_TRUE(engine_.thaw("c").ok());
  EXPECT_EQ(rt_.calls, (std::vector<std::string>{"release-network-lock 42"}));
}

TEST_F(EngineTest, ALockThatCannotBeRemovedKeepsTheSourceFrozenAndSaysWhy) {
  rt_.containers["c"].status = "paused";
  network_lock_ = Status(Code::kInternal, "iptables: permission denied");
  Status s = engine_.thaw("c");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("thaw c"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("permission denied"), std::string::npos) << s.message();
  EXPECT_EQ(rt_.containers["c"].status, "paused") << "the caller retries; nothing ran";
}

TEST_F(EngineTest, TcpCloseNeedsTheFerryRuntime) {
  auto r = engine_.dump({.container_id = "c", .image_dir = "/x", .tcp = TcpMode::kClose});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotOnFerryRuntime");
  EXPECT_TRUE(rt_.calls.empty()) << "nothing was touched";
}

// The network lock CRIU should use goes through the same file: without
// it the dump would silently fall back to CRIU's default (iptables).
TEST_F(EngineTest, ANetworkLockNeedsTheFerryRuntime) {
  auto r = engine_.dump({.container_id = "c",
                         .image_dir = "/x",
                         .tcp = TcpMode::kEstablished,
                         .network_lock = "nftables"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotOnFerryRuntime");
  EXPECT_NE(r.status().message().find("nftables"), std::string::npos) << r.status().message();
  EXPECT_TRUE(rt_.calls.empty()) << "nothing was touched";
}

TEST_F(EngineTest, KillWhileFrozenKillsBeforeThawing) {
  ASSERT_TRUE(engine_.freeze("c").ok());
  ASSERT_TRUE(engine_.kill_frozen("c").ok());
  EXPECT_EQ(rt_.calls,
            (std::vector<std::string>{"pause", "kill " + std::to_string(SIGKILL), "resume"}));
  EXPECT_EQ(rt_.containers["c"].status, "stopped");
}

TEST_F(EngineTest, RefusesToKillARunningSource) {
  Status s = engine_.kill_frozen("c");
  EXPECT_EQ(s.reason(), "NotFrozen");
  EXPECT_TRUE(rt_.calls.empty());
}

// The agent's cleanup after the switch kills again what the switch killed:
// done, with no call to the runtime but the state.
TEST_F(EngineTest, KillingAStoppedSourceAgainIsDone) {
  rt_.containers["c"].status = "stopped";
  EXPECT_TRUE(engine_.kill_frozen("c").ok());
  EXPECT_TRUE(rt_.calls.empty());
}

TEST_F(EngineTest, FreezeOfAStoppedContainerIsRefused) {
  rt_.containers["c"].status = "stopped";
  auto r = engine_.freeze("c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotRunning");
}

class LazyDumpTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() / ("ferry-lazy-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_ + "/store");
    std::ofstream(dir_ + "/pipe-max-size") << "1048576\n";
    store_ = std::make_unique<store::SnapshotStore>(dir_ + "/store");
    auto w = store_->begin({.binding = {.namespace_name = "ns",
                                        .pod_name = "dst",
                                        .pod_uid = "uid",
                                        .container_name = "app",
                                        .migration_uid = "m1"}});
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    writer_ = std::move(w).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  LazyDumpRequest request() {
    return {.container_id = "c",
            .work_dir = dir_ + "/work",
            .page_server = "127.0.0.1:27001",
            .tcp = TcpMode::kEstablished,
            .ready_timeout = std::chrono::seconds(5),
            .encrypt_transfer = false,  // TLS has its own tests below
            .pipe_max_size_sysctl = dir_ + "/pipe-max-size"};
  }
  std::string read(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  std::string dir_;
  std::unique_ptr<store::SnapshotStore> store_;
  std::unique_ptr<store::SnapshotWriter> writer_;
};

TEST_F(LazyDumpTest, PublishesTheSmallImagesAndKeepsServingPages) {
  bool hook_called = false;
  auto req = request();
  req.before_publish = [&](store::SnapshotWriter& w) {
    hook_called = true;
    return w.add_file("rootfs-diff/index", "x");
  };
  auto r = engine_.dump_lazy(req, *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(hook_called);
  // Frozen, then dumped; CRIU thawed the cgroup once it held the tasks, so
  // it is frozen again before anything is published.
  EXPECT_EQ(rt_.calls,
            (std::vector<std::string>{
                "pause", "start-checkpoint lazy 127.0.0.1:27001 leave-running", "pause"}));
  EXPECT_EQ(rt_.containers["c"].status, "paused") << "frozen while CRIU serves pages";
  std::string snap = store_->snapshot_dir("m1", "app");
  EXPECT_EQ(read(snap + "/inventory.img"), "inv");
  EXPECT_EQ(read(snap + "/pagemap-1.img"), "map");
  auto options = nlohmann::json::parse(read(snap + "/restore-options.json"));
  EXPECT_EQ(options,
            (nlohmann::json{
                {"tcpEstablished", true}, {"lazyPages", true}, {"pageServer", "127.0.0.1:27001"}}));
  EXPECT_EQ(read(dir_ + "/pipe-max-size"), "4194304\n") << "raised for CRIU's page server";
  ASSERT_NE(r->transfer, nullptr);
  EXPECT_FALSE(r->transfer->finished());
  *rt_.lazy_done = true;
  EXPECT_TRUE(r->transfer->wait(std::chrono::milliseconds(0)).ok());
  rt_.containers["c"].status = "paused";  // CRIU re-froze it on exit
  r->transfer.reset();
  EXPECT_EQ(rt_.calls.size(), 3u) << "a finished transfer needs no re-freeze";
}

// Our CRIU reads pages from the frozen tasks on request: the container's
// CRIU config file asks for it, and the pipe-size sysctl, needed only by
// CRIU's splice mode, is left alone.
TEST_F(LazyDumpTest, ReadModeGoesIntoTheCriuConfigAndLeavesThePipeSysctlAlone) {
  const std::string conf = dir_ + "/criu.conf";
  rt_.containers["c"].annotations[api::kCriuConfigAnnotation] = conf;
  auto req = request();
  req.read_pages_on_request = true;
  req.network_lock = "nftables";
  auto r = engine_.dump_lazy(req, *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->pages_read_on_request);
  EXPECT_EQ(read(conf), "skip-in-flight\nnetwork-lock nftables\nlazy-dump-mode read\n");
  EXPECT_EQ(read(dir_ + "/pipe-max-size"), "1048576\n") << "not needed in read mode";
  *rt_.lazy_done = true;
}

// The page server gets this dump's certificate through the CRIU config
// file; the target's client credentials go into the snapshot, all minted
// by one CA whose key is gone.
TEST_F(LazyDumpTest, TheTransferIsMutualTlsWithCredentialsMintedForThisDump) {
  const std::string conf = dir_ + "/criu.conf";
  rt_.containers["c"].annotations[api::kCriuConfigAnnotation] = conf;
  auto req = request();
  req.encrypt_transfer = true;
  req.read_pages_on_request = true;
  auto r = engine_.dump_lazy(req, *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->encrypted);
  const std::string tls = dir_ + "/work/tls";
  EXPECT_EQ(read(conf), "skip-in-flight\nlazy-dump-mode read\ntls\ntls-cacert " + tls +
                            "/ca.pem\ntls-cert " + tls + "/server.pem\ntls-key " + tls +
                            "/server-key.pem\n");
  EXPECT_EQ(std::filesystem::status(tls + "/server-key.pem").permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::string snap = store_->snapshot_dir("m1", "app");
  auto options = nlohmann::json::parse(read(snap + "/restore-options.json"));
  EXPECT_EQ(options["pageTransferTls"], true);
  const std::string ca = read(snap + "/" + kPageTransferCaFile);
  EXPECT_EQ(ca, read(tls + "/ca.pem"));
  EXPECT_TRUE(*pki::issued_by(read(snap + "/" + kPageTransferClientCertFile), ca));
  EXPECT_TRUE(*pki::issued_by(read(tls + "/server.pem"), ca));
  EXPECT_NE(read(snap + "/" + kPageTransferClientKeyFile), read(tls + "/server-key.pem"));
  EXPECT_FALSE(std::filesystem::exists(snap + "/server-key.pem")) << "the server's key stays here";
  *rt_.lazy_done = true;
}

// No CRIU config file to carry --tls: refused before anything is frozen,
// never served in clear text.
TEST_F(LazyDumpTest, AnEncryptedTransferNeedsTheFerryRuntime) {
  auto req = request();
  req.encrypt_transfer = true;
  auto r = engine_.dump_lazy(req, *writer_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotOnFerryRuntime");
  EXPECT_NE(r.status().message().find("over TLS"), std::string::npos) << r.status().to_string();
  EXPECT_EQ(rt_.calls, std::vector<std::string>{}) << "nothing frozen, nothing dumped";
  EXPECT_EQ(rt_.containers["c"].status, "running");
}

TEST_F(LazyDumpTest, SpliceModeUnlessAskedRaisesThePipeSysctl) {
  const std::string conf = dir_ + "/criu.conf";
  rt_.containers["c"].annotations[api::kCriuConfigAnnotation] = conf;
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->pages_read_on_request);
  EXPECT_EQ(read(conf), "skip-in-flight\n");
  EXPECT_EQ(read(dir_ + "/pipe-max-size"), "4194304\n");
  *rt_.lazy_done = true;
}

// A container not created through ferry-runc has no CRIU config file to
// carry the mode: CRIU splices, and the result says so.
TEST_F(LazyDumpTest, ReadModeWithoutACriuConfigFileFallsBackToSplice) {
  auto req = request();
  req.read_pages_on_request = true;
  auto r = engine_.dump_lazy(req, *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->pages_read_on_request);
  EXPECT_EQ(read(dir_ + "/pipe-max-size"), "4194304\n") << "splice mode needs it";
  *rt_.lazy_done = true;
}

TEST_F(LazyDumpTest, AnAbandonedTransferOfAFrozenSourceStopsCriuWithNoOtherCall) {
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const size_t calls = rt_.calls.size();
  r->transfer.reset();
  EXPECT_TRUE(*rt_.lazy_destroyed);
  EXPECT_EQ(rt_.calls.size(), calls) << "frozen already";
  EXPECT_EQ(rt_.containers["c"].status, "paused");
}

// A CRIU that keeps the cgroup frozen while it serves: freezing it again is
// a no-op, not a failed migration (runc refuses to pause a paused container).
TEST_F(LazyDumpTest, ASourceCriuLeftFrozenIsNotAnError) {
  rt_.lazy_leaves_frozen = true;
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(rt_.containers["c"].status, "paused");
  EXPECT_TRUE(std::filesystem::exists(store_->snapshot_dir("m1", "app")));
}

// Someone thawed the source during the transfer: abandoning it freezes the
// source before CRIU is stopped (CRIU's death would let its tasks run).
TEST_F(LazyDumpTest, AnAbandonedTransferReFreezesAThawedSourceBeforeStoppingCriu) {
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  rt_.containers["c"].status = "running";
  r->transfer.reset();
  EXPECT_TRUE(*rt_.lazy_destroyed);
  EXPECT_EQ(rt_.calls.back(), "pause");
  EXPECT_EQ(rt_.containers["c"].status, "paused");
}

// The source cannot be frozen again while CRIU serves: nothing is
// published (no target may restore next to a source CRIU could let go),
// and runc and CRIU are stopped.
TEST_F(LazyDumpTest, AFailedReFreezePublishesNothing) {
  rt_.pause_results = {Status(), Status(Code::kInternal, "freezer: device busy")};
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("freezer: device busy"), std::string::npos)
      << r.status().to_string();
  EXPECT_NE(r.status().message().find("again while CRIU serves"), std::string::npos)
      << r.status().to_string();
  EXPECT_FALSE(std::filesystem::exists(store_->snapshot_dir("m1", "app")));
  EXPECT_TRUE(*rt_.lazy_destroyed) << "no runc or CRIU left behind";
}

TEST_F(LazyDumpTest, CriuFailureBeforeReadyPublishesNothing) {
  rt_.lazy_result = Status(Code::kInternal, "criu: uffd missing", "PageTransferFailed");
  auto r = engine_.dump_lazy(request(), *writer_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "PageTransferFailed");
  EXPECT_TRUE(*rt_.lazy_destroyed) << "no runc or CRIU left behind";
  EXPECT_FALSE(std::filesystem::exists(store_->snapshot_dir("m1", "app")));
  EXPECT_EQ(rt_.containers["c"].status, "paused");
}

TEST(PipeMaxSizeTest, RaisedOnlyWhenLower) {
  std::string path =
      std::filesystem::temp_directory_path() / ("ferry-pipe-max-" + std::to_string(getpid()));
  std::ofstream(path) << "8388608\n";
  auto same = ensure_pipe_max_size(kCriuLazyPipeBytes, path);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, "");
  std::ofstream(path) << "1048576\n";
  auto raised = ensure_pipe_max_size(kCriuLazyPipeBytes, path);
  ASSERT_TRUE(raised.ok());
  EXPECT_NE(raised->find("from 1048576 to 4194304"), std::string::npos) << *raised;
  EXPECT_FALSE(ensure_pipe_max_size(kCriuLazyPipeBytes, path + ".missing").ok());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ferry::checkpoint
