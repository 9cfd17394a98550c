#include "runtime/lazy_pages_guard.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace ferry::runtime {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The guard against a stand-in for `criu lazy-pages --daemon`: a shell
// whose foreground creates the socket file and exits `start_code`, leaving
// a detached "daemon" that ends with `daemon_code` after a moment. The
// restored container's init is a `sleep` whose pid is in the pid file.
class LazyPagesGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ferry-lazy-guard-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    victim_ = ::fork();
    if (victim_ == 0) {
      ::execlp("sleep", "sleep", "60", nullptr);
      ::_exit(127);
    }
    std::ofstream(dir_ / "init.pid") << victim_;
  }
  void TearDown() override {
    ::kill(victim_, SIGKILL);
    ::waitpid(victim_, nullptr, 0);
    fs::remove_all(dir_);
  }
  LazyPagesGuard guard(int start_code, int daemon_code) {
    const std::string script = "touch '" + (dir_ / "lazy-pages.socket").string() +
                               "'; (sleep 0.3; exit " + std::to_string(daemon_code) + ") & exit " +
                               std::to_string(start_code);
    return {.criu_argv = {"sh", "-c", script},
            .work_dir = dir_.string(),
            .pid_file = (dir_ / "init.pid").string(),
            .pid_file_wait = 2s};
  }
  // Runs the guard in a child, as ferry-runc's detached guard does; returns
  // its exit code.
  static int run(const LazyPagesGuard& g) {
    pid_t child = ::fork();
    if (child == 0) ::_exit(run_lazy_pages_guard(g));
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  bool victim_alive() {
    int status = 0;
    return ::waitpid(victim_, &status, WNOHANG) == 0;
  }
  std::string read(const std::string& name) {
    std::ifstream in(dir_ / name);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  fs::path dir_;
  pid_t victim_ = -1;
};

TEST_F(LazyPagesGuardTest, ADaemonThatFailsGetsTheRestoredContainerKilled) {
  EXPECT_EQ(run(guard(0, 3)), 1);
  EXPECT_EQ(read(kLazyPagesStartedFile), "0\n");
  EXPECT_NE(read(kLazyPagesFailedFile).find("exited with 3 before every page arrived: killed"),
            std::string::npos)
      << read(kLazyPagesFailedFile);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = !victim_alive();
    if (!gone) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(gone) << "the container must not run on zero-filled pages";
}

TEST_F(LazyPagesGuardTest, ADaemonThatFinishesLeavesTheContainerAlone) {
  EXPECT_EQ(run(guard(0, 0)), 0);
  EXPECT_EQ(read(kLazyPagesStartedFile), "0\n");
  EXPECT_FALSE(fs::exists(dir_ / kLazyPagesFailedFile));
  EXPECT_TRUE(victim_alive());
}

TEST_F(LazyPagesGuardTest, AFailedStartIsReportedAndKillsNothing) {
  EXPECT_EQ(run(guard(5, 0)), 5);
  EXPECT_EQ(read(kLazyPagesStartedFile), "5\n");
  EXPECT_TRUE(victim_alive());
}

// The daemon failed during the restore: runc writes no pid file, and the
// guard gives up waiting for one instead of killing anything.
TEST_F(LazyPagesGuardTest, NoPidFileNoKill) {
  auto g = guard(0, 3);
  g.pid_file = (dir_ / "never.pid").string();
  g.pid_file_wait = 200ms;
  EXPECT_EQ(run(g), 1);
  EXPECT_NE(read(kLazyPagesFailedFile).find("no restored container to kill"), std::string::npos);
  EXPECT_TRUE(victim_alive());
}

TEST(LazyPagesGuardCodecTest, RoundTripsAndRefusesGarbage) {
  LazyPagesGuard g{.criu_argv = {"criu", "lazy-pages", "--daemon"},
                   .work_dir = "/run/ferry/work/c1",
                   .pid_file = "/run/c1/init.pid",
                   .pid_file_wait = 1500ms};
  auto back = decode_guard(encode_guard(g));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->criu_argv, g.criu_argv);
  EXPECT_EQ(back->work_dir, g.work_dir);
  EXPECT_EQ(back->pid_file, g.pid_file);
  EXPECT_EQ(back->pid_file_wait, g.pid_file_wait);
  EXPECT_FALSE(decode_guard("not json").ok());
  EXPECT_FALSE(decode_guard(R"({"argv":[],"workDir":"/w"})").ok());
}

}  // namespace
}  // namespace ferry::runtime
