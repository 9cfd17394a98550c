#include "runtime/criu_proxy.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/criu_rpc.h"
#include "runtime/criu_waiting.h"

namespace ferry::runtime {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(CriuRpcTest, DecodesTypeAndNotifyScript) {
  // criu_resp{type: NOTIFY, success: true, notify{script: "post-restore", pid: 300}}
  const std::string notify("\x0a\x0cpost-restore\x10\xac\x02", 17);
  const std::string resp = std::string("\x08\x06\x10\x01\x2a", 5) + char(notify.size()) + notify;
  auto m = criu_rpc::decode(resp);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->type, criu_rpc::kNotify);
  EXPECT_EQ(m->notify_script, "post-restore");
  // A request whose options (field 2) follow its type; cut short (a peeked
  // prefix) it still has its type.
  const std::string req = std::string("\x08\x02\x12\x05", 4) + "\x08\x01\x10\x02\x18";
  EXPECT_EQ(criu_rpc::decode(req)->type, criu_rpc::kRestore);
  EXPECT_EQ(criu_rpc::decode(req.substr(0, 3))->type, criu_rpc::kRestore);
  EXPECT_FALSE(criu_rpc::decode("").ok());
  EXPECT_FALSE(criu_rpc::decode(std::string("\x0b\x01", 2)).ok());  // wire type 3
  EXPECT_EQ(criu_rpc::encode_notify_answer(true), std::string("\x08\x06\x18\x01", 4));
  EXPECT_EQ(criu_rpc::encode_notify_answer(false), std::string("\x08\x06\x18\x00", 4));
}

// runc's side of the proxy: a socketpair whose other end is the proxy's
// `swrk` fd, the proxy running in a child process against fake_criu.py.
class CriuProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ferry-criu-proxy-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    setenv("FAKE_CRIU_LOG", (dir_ / "criu.log").c_str(), 1);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Starts the proxy; returns runc's end of the socket.
  using Verdict = std::function<std::optional<Status>()>;
  int start(const Verdict& verdict, const std::function<bool()>& criu_waits = nullptr) {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    child_ = ::fork();
    if (child_ == 0) {
      ::close(pair[0]);
      int fd = ::dup(pair[1]);  // without CLOEXEC, as runc passes it
      int code = run_criu_proxy(FERRY_FAKE_CRIU, {"swrk", std::to_string(fd)}, verdict,
                                (dir_ / "verify-error").string(), criu_waits);
      ::_exit(code);
    }
    ::close(pair[1]);
    return pair[0];
  }
  int finish() {
    int status = 0;
    ::waitpid(child_, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  static std::string receive(int fd) {
    std::string buf(65536, '\0');
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? n : 0);
    return buf;
  }
  std::string read(const std::string& name) {
    std::ifstream in(dir_ / name);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // runc's side of a restore: answers every notification yes and returns
  // CRIU's response to the request.
  static std::string restore(int runc) {
    if (::send(runc, "\x08\x02", 2, 0) <= 0) return {};  // a RESTORE request
    for (;;) {
      std::string m = receive(runc);
      auto decoded = criu_rpc::decode(m);
      if (m.empty() || !decoded.ok() || decoded->type != criu_rpc::kNotify) return m;
      const std::string yes = criu_rpc::encode_notify_answer(true);
      if (::send(runc, yes.data(), yes.size(), 0) <= 0) return {};
    }
  }

  fs::path dir_;
  pid_t child_ = -1;
};

TEST_F(CriuProxyTest, HoldsPostRestoreUntilTheVerificationPasses) {
  // ferry-runc's verdict comes well after CRIU asks, and a mark is left just
  // before it: post-restore must not reach runc before the mark.
  const fs::path mark = dir_ / "verified";
  const std::string verdict = (dir_ / "verdict").string();
  int runc = start([verdict] { return read_verdict(verdict); });
  std::jthread ferry_runc([&] {  // joined however the test ends
    std::this_thread::sleep_for(500ms);
    std::ofstream(mark) << "done";
    ASSERT_TRUE(write_verdict(verdict, Status()).ok());
  });
  ASSERT_GT(::send(runc, "\x08\x02", 2, 0), 0);  // a RESTORE request
  std::string restore_done;
  for (;;) {
    std::string m = receive(runc);
    ASSERT_FALSE(m.empty()) << "the proxy closed before the restore's response";
    auto decoded = criu_rpc::decode(m);
    ASSERT_TRUE(decoded.ok());
    if (decoded->type == criu_rpc::kNotify) {
      if (decoded->notify_script == "post-restore") {
        EXPECT_TRUE(fs::exists(mark)) << "post-restore was passed on before the verification ended";
      }
      const std::string yes = criu_rpc::encode_notify_answer(true);
      ASSERT_GT(::send(runc, yes.data(), yes.size(), 0), 0);
      continue;
    }
    restore_done = m;
    break;
  }
  EXPECT_EQ(restore_done, std::string("\x08\x02\x10\x01", 4)) << "RESTORE, success";
  EXPECT_EQ(finish(), 0);
  EXPECT_EQ(read("criu.log"),
            "request 2\nsetup-namespaces answered ok\npost-restore answered ok\n");
  EXPECT_FALSE(fs::exists(dir_ / "verify-error"));
  ::close(runc);
}

// A verification slower than CRIU: the proxy tells ferry-runc that CRIU
// waits (so the verification's late worker takes CRIU's core), and the
// verdict that follows lets the restore go on.
TEST_F(CriuProxyTest, TellsFerryRuncWhenCriuWaitsForTheVerdict) {
  const std::string verdict = (dir_ / "verdict").string();
  const std::string fifo_path = (dir_ / "criu-waiting").string();
  auto fifo = CriuWaitingFifo::create(fifo_path);
  ASSERT_TRUE(fifo.ok()) << fifo.status().to_string();
  int runc = start([verdict] { return read_verdict(verdict); },
                   [fifo_path] { return tell_criu_waiting(fifo_path); });
  std::jthread watchdog([&](const std::stop_token& stop) {
    for (int i = 0; i < 1000 && !stop.stop_requested(); ++i) std::this_thread::sleep_for(10ms);
    (*fifo)->close();
  });
  std::jthread ferry_runc([&] {
    // The verdict only once CRIU waits (or the watchdog gave up).
    const bool told = (*fifo)->wait();
    EXPECT_TRUE(told) << "the proxy never said that CRIU waits";
    ASSERT_TRUE(
        write_verdict(verdict, told ? Status() : Status(Code::kDataLoss, "not told", "X")).ok());
  });
  EXPECT_EQ(restore(runc), std::string("\x08\x02\x10\x01", 4)) << "RESTORE, success";
  EXPECT_EQ(finish(), 0);
  EXPECT_EQ(read("criu.log"),
            "request 2\nsetup-namespaces answered ok\npost-restore answered ok\n");
  ::close(runc);
}

// A verdict in before CRIU asks: nobody is told that CRIU waits.
TEST_F(CriuProxyTest, AVerdictInTimeTellsNobodyThatCriuWaits) {
  const std::string told = (dir_ / "told").string();
  int runc = start([] { return Status(); },
                   [told] {
                     std::ofstream(told) << "told";
                     return true;
                   });
  EXPECT_EQ(restore(runc), std::string("\x08\x02\x10\x01", 4)) << "RESTORE, success";
  EXPECT_EQ(finish(), 0);
  EXPECT_FALSE(fs::exists(told));
  ::close(runc);
}

TEST_F(CriuProxyTest, AFailedVerificationAbortsTheRestoreAndSaysWhy) {
  int runc = start([] { return Status(Code::kDataLoss, "pages-1.img is corrupted", "X"); });
  ASSERT_GT(::send(runc, "\x08\x02", 2, 0), 0);
  std::string m = receive(runc);
  ASSERT_EQ(criu_rpc::decode(m)->notify_script, "setup-namespaces");
  const std::string yes = criu_rpc::encode_notify_answer(true);
  ASSERT_GT(::send(runc, yes.data(), yes.size(), 0), 0);
  // runc never sees post-restore: the proxy answered CRIU with failure.
  m = receive(runc);
  EXPECT_EQ(m, std::string("\x08\x02\x10\x00", 4)) << "RESTORE, failed";
  EXPECT_EQ(finish(), 1);
  EXPECT_EQ(read("criu.log"),
            "request 2\nsetup-namespaces answered ok\npost-restore answered fail\n");
  EXPECT_EQ(read("verify-error"), "pages-1.img is corrupted\n");
  ::close(runc);
}

// The shim gave up and killed the runtime while the images were still
// being verified: CRIU must not wait for an answer that never comes.
TEST_F(CriuProxyTest, RuncGoneDuringTheVerificationAbortsTheRestore) {
  const auto t0 = std::chrono::steady_clock::now();
  int runc = start([t0]() -> std::optional<Status> {
    if (std::chrono::steady_clock::now() - t0 < 3s) return std::nullopt;
    return Status();  // would pass, after runc left
  });
  ASSERT_GT(::send(runc, "\x08\x02", 2, 0), 0);
  ASSERT_EQ(criu_rpc::decode(receive(runc))->notify_script, "setup-namespaces");
  const std::string yes = criu_rpc::encode_notify_answer(true);
  ASSERT_GT(::send(runc, yes.data(), yes.size(), 0), 0);
  ::close(runc);
  EXPECT_EQ(finish(), 1);
  EXPECT_EQ(read("criu.log"),
            "request 2\nsetup-namespaces answered ok\npost-restore answered fail\n");
  EXPECT_EQ(read("verify-error"), "runc went away during the restore\n");
}

TEST_F(CriuProxyTest, AnythingButARestoreIsTheRealCriuUnchanged) {
  int runc = start([] { return Status(Code::kDataLoss, "never asked", "X"); });
  ASSERT_GT(::send(runc, "\x08\x0a", 2, 0), 0);  // VERSION
  EXPECT_EQ(receive(runc), std::string("\x08\x0a\x10\x01", 4));
  EXPECT_EQ(finish(), 0);
  EXPECT_EQ(read("criu.log"), "request 10\n");
  EXPECT_FALSE(fs::exists(dir_ / "verify-error"));
  ::close(runc);
  // Not swrk at all: passed on as it is.
  int status = 0;
  pid_t child = ::fork();
  if (child == 0) ::_exit(run_criu_proxy(FERRY_FAKE_CRIU, {"check", "--all"}, nullptr, ""));
  ::waitpid(child, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(read("criu.log"), "request 10\nargs check --all\n");
}

// ferry-runc verifies and the proxy asks: the verdict passes through a
// file written once, atomically.
TEST_F(CriuProxyTest, TheVerdictPassesThroughAFileWrittenOnce) {
  const std::string ok_file = (dir_ / "verdict-ok").string();
  EXPECT_FALSE(read_verdict(ok_file).has_value()) << "no verdict before it is written";
  ASSERT_TRUE(write_verdict(ok_file, Status()).ok());
  auto ok = read_verdict(ok_file);
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(ok->ok());
  const std::string bad_file = (dir_ / "verdict-bad").string();
  ASSERT_TRUE(
      write_verdict(bad_file, Status(Code::kDataLoss, "file pages-1.img: bytes 0-64 differ", "X"))
          .ok());
  auto bad = read_verdict(bad_file);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->code(), Code::kDataLoss);
  EXPECT_EQ(bad->message(), "file pages-1.img: bytes 0-64 differ");
}

}  // namespace
}  // namespace ferry::runtime
