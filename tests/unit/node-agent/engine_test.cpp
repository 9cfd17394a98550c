#include "checkpoint/engine.h"

#include <gtest/gtest.h>

#include <csignal>
#include <map>

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
  Status pause(const std::string& id) override {
    calls.push_back("pause");
    containers[id].status = "paused";
    return {};
  }
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

 private:
  bool killed_ = false;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { rt_.containers["c"] = {.id = "c", .pid = 42, .status = "running"}; }
  FakeRuntime rt_;
  CheckpointEngine engine_{rt_};
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

TEST_F(EngineTest, TcpCloseNeedsTheFerryRuntime) {
  auto r = engine_.dump({.container_id = "c", .image_dir = "/x", .tcp = TcpMode::kClose});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotOnFerryRuntime");
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

TEST_F(EngineTest, FreezeOfAStoppedContainerIsRefused) {
  rt_.containers["c"].status = "stopped";
  auto r = engine_.freeze("c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "NotRunning");
}

}  // namespace
}  // namespace ferry::checkpoint
