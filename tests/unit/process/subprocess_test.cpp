#include "process/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ferry::process {
namespace {

using namespace std::chrono_literals;

TEST(RunTest, CapturesStdoutStderrAndExitCode) {
  auto r = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->exit_code, 3);
}

TEST(RunTest, FeedsStdin) {
  std::string big(1 << 20, 'x');  // larger than a pipe buffer
  auto r = run({"wc", "-c"}, 10s, big);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::stoul(r->out), big.size());
}

TEST(RunTest, MissingBinaryExits127) {
  auto r = run({"/nonexistent/binary"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 127);
}

TEST(RunTest, DeadlineKillsTheWholeGroup) {
  auto start = std::chrono::steady_clock::now();
  // The grandchild holds stdout open: without a group kill this would hang.
  auto r = run({"sh", "-c", "sleep 30 & sleep 30"}, 300ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(RunTest, EmptyArgvIsInvalid) {
  auto r = run({});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
}

TEST(SubprocessTest, WritesOutputFileAndReportsExit) {
  auto dir = std::filesystem::temp_directory_path() / ("ferry-sub-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto log = (dir / "out.log").string();
  auto p = Subprocess::spawn({.argv = {"sh", "-c", "echo hello $FERRY_X; exit 4"},
                              .env = {{"FERRY_X", "world"}},
                              .output_file = log});
  ASSERT_TRUE(p.ok());
  auto status = p->wait(10s);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(exit_code(*status), 4);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "hello world\n");
  std::filesystem::remove_all(dir);
}

TEST(SubprocessTest, DestructorStopsTheChild) {
  pid_t pid = -1;
  {
    auto p = Subprocess::spawn({.argv = {"sleep", "30"}});
    ASSERT_TRUE(p.ok());
    pid = p->pid();
    EXPECT_TRUE(p->running());
  }
  EXPECT_NE(kill(pid, 0), 0);  // gone and reaped
}

TEST(SubprocessTest, StopEscalatesToKill) {
  auto p = Subprocess::spawn({.argv = {"sh", "-c", "trap '' TERM; sleep 30"}});
  ASSERT_TRUE(p.ok());
  pid_t pid = p->pid();
  p->stop(200ms);
  EXPECT_NE(kill(pid, 0), 0);
}

TEST(SubprocessTest, KeptFdsAreInheritedAtTheirNumbers) {
  // As `runc checkpoint --status-fd N` needs: close-on-exec fds of the
  // caller, kept open in the child only when listed.
  for (bool keep : {true, false}) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    SpawnOptions options{.argv = {"sh", "-c", "printf ready >&" + std::to_string(p[1])}};
    if (keep) options.keep_fds.push_back(p[1]);
    auto child = Subprocess::spawn(options);
    ASSERT_TRUE(child.ok());
    close(p[1]);
    auto status = child->wait(10s);
    ASSERT_TRUE(status.ok());
    char buf[16] = {};
    ssize_t n = read(p[0], buf, sizeof buf);
    close(p[0]);
    EXPECT_EQ(exit_code(*status) == 0, keep);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), keep ? "ready" : "");
  }
}

TEST(SubprocessTest, WaitTimesOut) {
  auto p = Subprocess::spawn({.argv = {"sleep", "30"}});
  ASSERT_TRUE(p.ok());
  auto r = p->wait(50ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
}

TEST(SubprocessTest, WaitReturnsTheExitOfAChildThatEndsMeanwhile) {
  auto p = Subprocess::spawn({.argv = {"sh", "-c", "sleep 0.2; exit 3"}});
  ASSERT_TRUE(p.ok());
  auto r = p->wait(30s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(exit_code(*r), 3);
  // Reaped once; asked again, the same answer.
  auto again = p->wait(0ms);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(exit_code(*again), 3);
}

TEST(SubprocessTest, WaitForAChildReapedElsewhereIsAnErrorNotACrash) {
  auto p = Subprocess::spawn({.argv = {"true"}});
  ASSERT_TRUE(p.ok());
  int status = 0;
  ASSERT_EQ(waitpid(p->pid(), &status, 0), p->pid());
  auto r = p->wait(5s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInternal);
  EXPECT_NE(r.status().message().find("reaped by someone else"), std::string::npos)
      << r.status().message();
}

// The child moves itself into its cgroups by writing "0" to each
// cgroup.procs before exec. A regular file stands in for one here (the real
// kernel interface is covered by tests/integration/node-agent).
TEST(SpawnTest, TheChildJoinsItsCgroupsBeforeExec) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ferry-spawn-cgroups-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string a = (dir / "a.procs").string(), b = (dir / "b.procs").string();
  std::ofstream(a).close();
  std::ofstream(b).close();
  auto child = Subprocess::spawn({.argv = {"true"}, .cgroup_procs = {a, b}});
  ASSERT_TRUE(child.ok()) << child.status().to_string();
  auto status = child->wait(10s);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(exit_code(*status), 0);
  for (const auto& f : {a, b}) {
    std::ifstream in(f);
    std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(written, "0") << f;
  }
  std::filesystem::remove_all(dir);
}

TEST(SpawnTest, ACgroupTheChildCannotJoinFailsTheSpawnAndNamesIt) {
  const auto marker =
      std::filesystem::temp_directory_path() / ("ferry-spawn-ran-" + std::to_string(::getpid()));
  auto child = Subprocess::spawn(
      {.argv = {"touch", marker.string()}, .cgroup_procs = {"/nonexistent/ferry/cgroup.procs"}});
  ASSERT_FALSE(child.ok());
  EXPECT_NE(child.status().message().find("join cgroup /nonexistent/ferry/cgroup.procs: No such "
                                          "file or directory"),
            std::string::npos)
      << child.status().to_string();
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the command never ran";
}

TEST(SpawnTest, ACgroupNamespaceTheChildCannotEnterFailsTheSpawn) {
  auto child = Subprocess::spawn({.argv = {"true"}, .cgroup_namespace = "/nonexistent/ns"});
  ASSERT_FALSE(child.ok());
  EXPECT_NE(child.status().message().find("enter cgroup namespace /nonexistent/ns"),
            std::string::npos)
      << child.status().to_string();
}

}  // namespace
}  // namespace ferry::process
