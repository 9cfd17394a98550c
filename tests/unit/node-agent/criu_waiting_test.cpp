#include "runtime/criu_waiting.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

namespace ferry::runtime {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class CriuWaitingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ferry-criu-waiting-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "criu-waiting").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string path_;
};

TEST_F(CriuWaitingTest, EveryWaiterGoesOnOnceTheProxySaysCriuWaits) {
  auto fifo = CriuWaitingFifo::create(path_);
  ASSERT_TRUE(fifo.ok()) << fifo.status().to_string();
  auto first = std::async(std::launch::async, [&] { return (*fifo)->wait(); });
  auto second = std::async(std::launch::async, [&] { return (*fifo)->wait(); });
  EXPECT_EQ(first.wait_for(100ms), std::future_status::timeout) << "nothing said yet";
  EXPECT_TRUE(tell_criu_waiting(path_));
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(first.get());
  EXPECT_TRUE(second.get());
  EXPECT_TRUE((*fifo)->wait()) << "a late waiter goes on too";
}

TEST_F(CriuWaitingTest, CloseSendsWaitersHomeNowAndLater) {
  auto fifo = CriuWaitingFifo::create(path_);
  ASSERT_TRUE(fifo.ok()) << fifo.status().to_string();
  auto waiting = std::async(std::launch::async, [&] { return (*fifo)->wait(); });
  EXPECT_EQ(waiting.wait_for(100ms), std::future_status::timeout);
  (*fifo)->close();
  ASSERT_EQ(waiting.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(waiting.get());
  EXPECT_FALSE((*fifo)->wait()) << "closed stays closed";
}

TEST_F(CriuWaitingTest, NoReaderIsNotAnError) {
  EXPECT_FALSE(tell_criu_waiting(path_)) << "no FIFO";
  {
    auto fifo = CriuWaitingFifo::create(path_);
    ASSERT_TRUE(fifo.ok());
    fs::rename(path_, dir_ / "kept");  // the same FIFO, where the destructor does not look
  }
  EXPECT_FALSE(fs::exists(path_)) << "removed with its reader";
  EXPECT_FALSE(tell_criu_waiting((dir_ / "kept").string())) << "ferry-runc is gone: no reader";
  std::ofstream(dir_ / "plain") << "x";
  EXPECT_FALSE(tell_criu_waiting((dir_ / "plain").string())) << "not a FIFO";
}

TEST_F(CriuWaitingTest, APreviousAttemptsFileIsReplaced) {
  std::ofstream(path_) << "left over";
  auto fifo = CriuWaitingFifo::create(path_);
  ASSERT_TRUE(fifo.ok()) << fifo.status().to_string();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(tell_criu_waiting(path_));
  EXPECT_TRUE((*fifo)->wait());
}

TEST_F(CriuWaitingTest, ADirectoryItCannotMakeTheFifoInIsAnError) {
  auto fifo = CriuWaitingFifo::create((dir_ / "missing" / "criu-waiting").string());
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.status().message().find("mkfifo"), std::string::npos) << fifo.status().to_string();
}

}  // namespace
}  // namespace ferry::runtime
