// The agent's records survive a restart as written, and only the
// Migration's own record is found.
#include "controller/records.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace ferry::agent {
namespace {

class RecordStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/records-" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(RecordStoreTest, SavedRecordsComeBackAfterARestartAndErase) {
  Record r{.migration_uid = "uid-1",
           .ns = "shop",
           .migration = "move-cart",
           .pod = "cart",
           .pod_uid = "pod-1",
           .containers = {{"app", "c1"}, {"sidecar", "c2"}},
           .state = Record::State::kFrozen,
           .failure = "criu said no",
           .figures = {.freeze_seconds = 0.004,
                       .dump_seconds = 0.5,
                       .publish_seconds = 0.02,
                       .bytes = 1082130432},
           .post_copy = true};
  ASSERT_TRUE(RecordStore(dir_).save(r).ok());
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/uid-1.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "node-local state is root's";

  RecordStore restarted(dir_);
  auto found = restarted.find("shop", "move-cart");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->migration_uid, "uid-1");
  EXPECT_EQ(found->pod_uid, "pod-1");
  ASSERT_EQ(found->containers.size(), 2u);
  EXPECT_EQ(found->containers[1].id, "c2");
  EXPECT_EQ(found->state, Record::State::kFrozen);
  EXPECT_EQ(found->failure, "criu said no");
  // What a retried status write reports (agent_controller.cpp).
  EXPECT_DOUBLE_EQ(found->figures.freeze_seconds, 0.004);
  EXPECT_DOUBLE_EQ(found->figures.dump_seconds, 0.5);
  EXPECT_DOUBLE_EQ(found->figures.publish_seconds, 0.02);
  EXPECT_EQ(found->figures.bytes, 1082130432u);
  EXPECT_TRUE(found->post_copy) << "a restarted agent must know its page servers are gone";
  EXPECT_FALSE(restarted.find("shop", "other").has_value());
  EXPECT_FALSE(restarted.find("other", "move-cart").has_value());

  ASSERT_TRUE(restarted.erase("uid-1").ok());
  EXPECT_FALSE(restarted.find("shop", "move-cart").has_value());
  EXPECT_TRUE(restarted.erase("uid-1").ok()) << "erasing twice is fine";
}

// Every state comes back as written: a restarted agent tells "nothing frozen
// yet" (Preparing: carry on) from "a dump was cut short" (Checkpointing:
// roll back).
TEST_F(RecordStoreTest, EveryStateSurvivesARestart) {
  for (auto state : {Record::State::kPreparing, Record::State::kCheckpointing,
                     Record::State::kFrozen, Record::State::kKilled}) {
    Record r{.migration_uid = "uid-s", .ns = "shop", .migration = "m", .state = state};
    ASSERT_TRUE(RecordStore(dir_).save(r).ok());
    auto found = RecordStore(dir_).find("shop", "m");
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->state, state) << static_cast<int>(state);
  }
}

// A record written by an agent from before the figures were kept reads as
// having none, not as unreadable.
TEST_F(RecordStoreTest, ARecordWithoutFiguresReadsWithZeros) {
  std::filesystem::create_directories(dir_);
  {
    std::ofstream out(dir_ + "/uid-old.json");
    out << R"({"migrationUid":"uid-old","namespace":"shop","migration":"m","pod":"p",)"
        << R"("podUid":"u","containers":[{"name":"app","id":"c1"}],"state":"Frozen",)"
        << R"("failure":""})"
        << "\n";
  }
  auto found = RecordStore(dir_).find("shop", "m");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->state, Record::State::kFrozen);
  EXPECT_EQ(found->figures.bytes, 0u);
  EXPECT_DOUBLE_EQ(found->figures.dump_seconds, 0.0);
  EXPECT_FALSE(found->post_copy) << "older agents did Cold only";
}

TEST_F(RecordStoreTest, NoDirectoryMeansNoRecords) {
  auto all = RecordStore(dir_ + "/missing").load_all();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

}  // namespace
}  // namespace ferry::agent
