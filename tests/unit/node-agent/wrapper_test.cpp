#include "runtime/wrapper.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/criu_proxy.h"
#include "runtime/pod_logs.h"
#include "runtime/runc_args.h"

namespace ferry::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(RuncArgsTest, ContainerdShimCreate) {
  // The argv go-runc builds for containerd's runc shim.
  auto a = parse_runc_args({"--root", "/run/containerd/runc/k8s.io", "--log", "/run/b/log.json",
                            "--log-format", "json", "create", "--bundle", "/run/b", "--pid-file",
                            "/run/b/init.pid", "--console-socket", "/tmp/pty.sock", "abc123"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->root, "/run/containerd/runc/k8s.io");
  EXPECT_EQ(a->log, "/run/b/log.json");
  EXPECT_EQ(a->log_format, "json");
  EXPECT_EQ(a->command, "create");
  EXPECT_EQ(a->bundle, "/run/b");
  EXPECT_EQ(a->pid_file, "/run/b/init.pid");
  EXPECT_EQ(a->console_socket, "/tmp/pty.sock");
  EXPECT_EQ(a->container_id, "abc123");
  EXPECT_EQ(a->global_flags.size(), 6u);
}

TEST(RuncArgsTest, EqualsFormsKillAndExec) {
  auto kill = parse_runc_args({"--root=/r", "kill", "--all", "abc", "9"});
  ASSERT_TRUE(kill.ok());
  EXPECT_EQ(kill->root, "/r");
  EXPECT_EQ(kill->container_id, "abc");
  auto exec = parse_runc_args(
      {"exec", "--process", "/tmp/p.json", "--detach", "--pid-file", "/tmp/p.pid", "abc"});
  ASSERT_TRUE(exec.ok());
  EXPECT_EQ(exec->container_id, "abc");
  auto version = parse_runc_args({"--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_TRUE(version->command.empty());
  EXPECT_FALSE(parse_runc_args({"--root"}).ok());
}

class WrapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ferry-wrapper-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "bundle/rootfs");
    config_.runtime = "/usr/bin/true-runc";
    config_.state_dir = (dir_ / "state").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_spec(const json& annotations) {
    json spec = {
        {"ociVersion", "1.2.0"}, {"root", {{"path", "rootfs"}}}, {"annotations", annotations}};
    std::ofstream(dir_ / "bundle/config.json") << spec.dump();
  }
  json read_spec() {
    std::ifstream in(dir_ / "bundle/config.json");
    return json::parse(in);
  }
  std::vector<std::string> create_args() {
    return {"--root",
            "/run/r",
            "--log",
            (dir_ / "log.json").string(),
            "--log-format",
            "json",
            "create",
            "--bundle",
            (dir_ / "bundle").string(),
            "--pid-file",
            (dir_ / "init.pid").string(),
            "c1"};
  }
  fs::path dir_;
  WrapperConfig config_;
  int prepare_calls_ = 0;
  RestorePreparer ok_preparer() {
    return [this](const WrapperConfig&, const RestoreRequest& r) -> Result<PreparedRestore> {
      ++prepare_calls_;
      last_request_ = r;
      return PreparedRestore{.image_dir = "/snap/m1/app"};
    };
  }
  RestoreRequest last_request_;
};

TEST_F(WrapperTest, OrdinaryCallsPassThroughUnchanged) {
  auto action = plan(config_, {"--root", "/r", "state", "c1"}, ok_preparer());
  EXPECT_EQ(action.exec_argv,
            (std::vector<std::string>{"/usr/bin/true-runc", "--root", "/r", "state", "c1"}));
  EXPECT_EQ(prepare_calls_, 0);
}

TEST_F(WrapperTest, PlainCreatePassesThroughWithACriuConfig) {
  write_spec({{"io.kubernetes.cri.container-name", "app"}});
  auto args = create_args();
  auto action = plan(config_, args, ok_preparer());
  std::vector<std::string> expected = {"/usr/bin/true-runc"};
  expected.insert(expected.end(), args.begin(), args.end());
  EXPECT_EQ(action.exec_argv, expected);
  EXPECT_EQ(prepare_calls_, 0);
  std::string conf = read_spec()["annotations"]["org.criu.config"];
  EXPECT_EQ(conf, config_.state_dir + "/criu/c1.conf");
  std::ifstream in(conf);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "tcp-close");
}

TEST_F(WrapperTest, AnnotatedCreateBecomesRestoreAndStartIsANoOp) {
  write_spec({{"ferry.dev/restore-from", "m-1"},
              {"io.kubernetes.cri.container-name", "app"},
              {"io.kubernetes.cri.sandbox-namespace", "ns"},
              {"io.kubernetes.cri.sandbox-name", "pod-a"},
              {"io.kubernetes.cri.sandbox-uid", "uid-a"}});
  auto action = plan(config_, create_args(), ok_preparer());
  ASSERT_EQ(prepare_calls_, 1);
  EXPECT_EQ(last_request_.migration_uid, "m-1");
  EXPECT_EQ(last_request_.pod_namespace, "ns");
  EXPECT_EQ(last_request_.pod_name, "pod-a");
  EXPECT_EQ(last_request_.pod_uid, "uid-a");
  EXPECT_EQ(last_request_.container_name, "app");
  EXPECT_EQ(last_request_.rootfs, (dir_ / "bundle/rootfs").string());
  const auto& argv = action.exec_argv;
  ASSERT_GE(argv.size(), 10u);
  EXPECT_EQ(argv[0], "/usr/bin/true-runc");
  EXPECT_EQ(std::vector<std::string>(argv.begin() + 1, argv.begin() + 7),
            (std::vector<std::string>{"--root", "/run/r", "--log", (dir_ / "log.json").string(),
                                      "--log-format", "json"}));
  EXPECT_EQ(argv[7], "restore");
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--detach"), argv.end());
  EXPECT_NE(std::find(argv.begin(), argv.end(), "/snap/m1/app"), argv.end());
  EXPECT_NE(std::find(argv.begin(), argv.end(), (dir_ / "init.pid").string()), argv.end());
  EXPECT_EQ(argv.back(), "c1");

  auto start = plan(config_, {"--root", "/run/r", "start", "c1"}, ok_preparer());
  EXPECT_TRUE(start.exec_argv.empty());
  EXPECT_EQ(start.exit_code, 0);
  auto start_again = plan(config_, {"--root", "/run/r", "start", "c1"}, ok_preparer());
  EXPECT_FALSE(start_again.exec_argv.empty()) << "the marker is consumed by the first start";
}

TEST_F(WrapperTest, SandboxContainersAreNeverRestored) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-type", "sandbox"}});
  auto action = plan(config_, create_args(), ok_preparer());
  EXPECT_EQ(prepare_calls_, 0);
  EXPECT_EQ(action.exec_argv[7], "create");
}

TEST_F(WrapperTest, RefusedRestoreFailsWithOneClearLogLine) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  auto refuse = [](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    return Status(Code::kFailedPrecondition, "snapshot is bound to pod other/x",
                  "SnapshotBindingMismatch");
  };
  auto action = plan(config_, create_args(), refuse);
  EXPECT_TRUE(action.exec_argv.empty());
  EXPECT_EQ(action.exit_code, 1);
  std::ifstream log(dir_ / "log.json");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  auto entry = json::parse(line);
  EXPECT_EQ(entry["level"], "error");
  EXPECT_EQ(entry["msg"],
            "ferry-runc: restore of container c1 refused: snapshot is bound to pod other/x");
  EXPECT_FALSE(fs::exists(config_.state_dir + "/restored/c1"));
}

// Memory images left unverified by the preparer are verified by the CRIU
// proxy: runc gets a PATH whose `criu` is ferry-runc, and the proxy's reason
// is what a failure reports.
TEST_F(WrapperTest, UnverifiedImagesGoThroughTheCriuProxy) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  config_.criu = "/bin/sh";  // any executable: it is only resolved here
  config_.self_exe = "/usr/local/bin/ferry-runc";
  bool verified_here = false;
  auto prepare = [&](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    PreparedRestore p{.image_dir = "/snap/m1/app", .unverified = {"pages-1.img", "pages-2.img"}};
    p.verify_unverified = [&](store::LateStart*) {
      verified_here = true;
      return Status();
    };
    return p;
  };
  auto action = plan(config_, create_args(), prepare);
  EXPECT_EQ(action.exit_code, 0);
  EXPECT_FALSE(verified_here) << "not before the restore: beside it";
  std::map<std::string, std::string> env(action.env.begin(), action.env.end());
  const std::string proxy_dir = config_.state_dir + "/criu-proxy";
  EXPECT_EQ(env["PATH"].rfind(proxy_dir + ":", 0), 0u) << env["PATH"];
  EXPECT_EQ(fs::read_symlink(proxy_dir + "/criu"), "/usr/local/bin/ferry-runc");
  EXPECT_EQ(env[kProxyRealCriuEnv], "/bin/sh");
  EXPECT_EQ(env[kProxyVerdictFileEnv], config_.state_dir + "/work/c1/verify-verdict");
  EXPECT_EQ(action.verdict_file, env[kProxyVerdictFileEnv]);
  EXPECT_EQ(env[kProxyCriuWaitingEnv], config_.state_dir + "/work/c1/criu-waiting");
  EXPECT_EQ(action.criu_waiting_fifo, env[kProxyCriuWaitingEnv]);
  ASSERT_TRUE(action.verify) << "ferry-runc verifies beside runc";
  EXPECT_TRUE(action.verify(nullptr).ok());
  EXPECT_TRUE(verified_here);
  EXPECT_EQ(action.failure_reason_file, env[kProxyErrorFileEnv]);
  EXPECT_EQ(action.failure_context, "restore of container c1 refused: ");
  EXPECT_EQ(action.report_args.log, (dir_ / "log.json").string());
}

// Without a usable CRIU to put behind the proxy, ferry-runc verifies the
// images itself before the restore, and a mismatch refuses it.
TEST_F(WrapperTest, WithoutTheProxyTheImagesAreVerifiedBeforeTheRestore) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  config_.criu = (dir_ / "no-such-criu").string();
  Status verdict = Status(Code::kDataLoss, "file pages-1.img is corrupted", "X");
  auto prepare = [&](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    PreparedRestore p{.image_dir = "/snap/m1/app", .unverified = {"pages-1.img"}};
    p.verify_unverified = [&](store::LateStart* criu_waits) {
      EXPECT_EQ(criu_waits, nullptr) << "before the restore: no CRIU to wait for";
      return verdict;
    };
    return p;
  };
  auto refused = plan(config_, create_args(), prepare);
  EXPECT_TRUE(refused.exec_argv.empty());
  EXPECT_EQ(refused.exit_code, 1);
  std::ifstream log(dir_ / "log.json");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  EXPECT_EQ(json::parse(line)["msg"],
            "ferry-runc: restore of container c1 refused: file pages-1.img is corrupted");
  EXPECT_FALSE(fs::exists(config_.state_dir + "/restored/c1"));

  verdict = Status();
  auto restored = plan(config_, create_args(), prepare);
  EXPECT_FALSE(restored.exec_argv.empty());
  EXPECT_TRUE(restored.env.empty()) << "no proxy";
  EXPECT_TRUE(restored.failure_reason_file.empty());
}

TEST_F(WrapperTest, CreateWaitsForASnapshotStillBeingPublished) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  config_.snapshot_wait_seconds = 10;
  int calls = 0;
  auto later = [&](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    if (++calls < 4) return Status(Code::kNotFound, "no snapshot yet", "SnapshotNotFound");
    return PreparedRestore{.image_dir = "/snap/m1/app"};
  };
  auto action = plan(config_, create_args(), later);
  EXPECT_EQ(calls, 4);
  ASSERT_FALSE(action.exec_argv.empty());
  EXPECT_EQ(action.exec_argv[7], "restore");
}

TEST_F(WrapperTest, AWaitEndsAtTheDeadlineOrWhenTheMigrationIsAbandoned) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  auto never = [](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    return Status(Code::kNotFound, "no snapshot for migration m-1", "SnapshotNotFound");
  };
  config_.snapshot_wait_seconds = 1;
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(plan(config_, create_args(), never).exit_code, 1);
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));

  config_.snapshot_wait_seconds = 30;
  config_.snapshot_root = (dir_ / "snapshots").string();
  fs::create_directories(config_.snapshot_root);
  std::ofstream(abandoned_marker(config_.snapshot_root, "m-1")) << "rolled back\n";
  started = std::chrono::steady_clock::now();
  EXPECT_EQ(plan(config_, create_args(), never).exit_code, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  std::ifstream log(dir_ / "log.json");
  std::string line, last;
  while (std::getline(log, line)) last = line;
  EXPECT_NE(last.find("migration m-1 was rolled back"), std::string::npos) << last;
}

TEST_F(WrapperTest, DeleteCleansUp) {
  write_spec({{"ferry.dev/restore-from", "m-1"}});
  (void)plan(config_, create_args(), ok_preparer());
  ASSERT_TRUE(fs::exists(config_.state_dir + "/restored/c1"));
  const std::string fifo = criu_proxy_waiting_fifo(config_, "c1");
  fs::create_directories(fs::path(fifo).parent_path());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);  // as a ferry-runc that died would leave it
  auto del = plan(config_, {"delete", "--force", "c1"}, ok_preparer());
  EXPECT_EQ(del.exec_argv.back(), "c1");
  EXPECT_FALSE(fs::exists(config_.state_dir + "/restored/c1"));
  EXPECT_FALSE(fs::exists(config_.state_dir + "/criu/c1.conf"));
  EXPECT_FALSE(fs::exists(fifo));
}

TEST(LazyPagesArgvTest, DaemonListensInTheRestoreWorkDir) {
  auto argv =
      lazy_pages_argv("/bin/criu", "/snap/m1/app", "/run/ferry/work/c1", "10.0.0.7:27001", false);
  ASSERT_TRUE(argv.ok()) << argv.status().to_string();
  EXPECT_EQ(*argv, (std::vector<std::string>{
                       "/bin/criu", "lazy-pages", "--page-server", "--address", "10.0.0.7",
                       "--port", "27001", "--images-dir", "/snap/m1/app", "--work-dir",
                       "/run/ferry/work/c1", "--daemon", "--pidfile",
                       "/run/ferry/work/c1/lazy-pages.pid", "--log-file", "lazy-pages.log"}));
  auto v6 = lazy_pages_argv("criu", "/i", "/w", "[fd00::7]:27001", false);
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ((*v6)[4], "fd00::7");
  for (const char* bad :
       {"", "10.0.0.7", "10.0.0.7:", ":27001", "10.0.0.7:http", "h:0", "h:65536"}) {
    EXPECT_FALSE(lazy_pages_argv("criu", "/i", "/w", bad, false).ok()) << bad;
  }
}

// Over TLS the daemon presents the snapshot's client certificate and
// trusts only the migration's CA.
TEST(LazyPagesArgvTest, OverTlsTheDaemonUsesTheSnapshotsCredentials) {
  auto argv = lazy_pages_argv("criu", "/snap/m1/app", "/w", "10.0.0.7:27001", true);
  ASSERT_TRUE(argv.ok()) << argv.status().to_string();
  const std::vector<std::string> tail(argv->end() - 7, argv->end());
  EXPECT_EQ(tail,
            (std::vector<std::string>{"--tls", "--tls-cacert", "/snap/m1/app/page-transfer-ca.pem",
                                      "--tls-cert", "/snap/m1/app/page-transfer-client.pem",
                                      "--tls-key", "/snap/m1/app/page-transfer-client-key.pem"}));
}

TEST_F(WrapperTest, PostCopyRestoreStartsLazyPagesFirst) {
  write_spec({{"ferry.dev/restore-from", "m-1"}, {"io.kubernetes.cri.container-name", "app"}});
  auto lazy = [](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    return PreparedRestore{
        .image_dir = "/snap/m1/app", .lazy_pages = true, .page_server = "127.0.0.1:27001"};
  };
  config_.criu = "/opt/criu";
  std::vector<std::string> daemon;
  std::string daemon_dir, guarded_pid_file;
  auto action = plan(config_, create_args(), lazy,
                     [&](const std::vector<std::string>& argv, const std::string& dir,
                         const std::string& pid_file) {
                       daemon = argv;
                       daemon_dir = dir;
                       guarded_pid_file = pid_file;
                       return Status();
                     });
  const std::string work = config_.state_dir + "/work/c1";
  EXPECT_EQ(daemon_dir, work);
  const auto args = create_args();
  auto pf = std::find(args.begin(), args.end(), "--pid-file");
  ASSERT_NE(pf, args.end());
  EXPECT_EQ(guarded_pid_file, *(pf + 1)) << "the guard kills the init runc writes there";
  ASSERT_FALSE(daemon.empty());
  EXPECT_EQ(daemon[0], "/opt/criu");
  EXPECT_EQ(daemon[1], "lazy-pages");
  const auto& argv = action.exec_argv;
  ASSERT_FALSE(argv.empty());
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--lazy-pages"), argv.end());
  auto wp = std::find(argv.begin(), argv.end(), "--work-path");
  ASSERT_NE(wp, argv.end());
  EXPECT_EQ(*(wp + 1), work) << "CRIU restore finds lazy-pages.socket there";
  EXPECT_EQ(argv.back(), "c1");
}

TEST_F(WrapperTest, ColdRestoreStartsNoLazyPagesDaemon) {
  write_spec({{"ferry.dev/restore-from", "m-1"}});
  bool started = false;
  auto action = plan(config_, create_args(), ok_preparer(),
                     [&](const std::vector<std::string>&, const std::string&, const std::string&) {
                       started = true;
                       return Status();
                     });
  EXPECT_FALSE(started);
  EXPECT_EQ(std::find(action.exec_argv.begin(), action.exec_argv.end(), "--lazy-pages"),
            action.exec_argv.end());
}

TEST_F(WrapperTest, LazyPagesDaemonFailureFailsTheCreate) {
  write_spec({{"ferry.dev/restore-from", "m-1"}});
  auto lazy = [](const WrapperConfig&, const RestoreRequest&) -> Result<PreparedRestore> {
    return PreparedRestore{
        .image_dir = "/snap/m1/app", .lazy_pages = true, .page_server = "127.0.0.1:27001"};
  };
  auto action = plan(config_, create_args(), lazy,
                     [](const std::vector<std::string>&, const std::string&, const std::string&) {
                       return internal_error("criu lazy-pages failed to start: no uffd");
                     });
  EXPECT_TRUE(action.exec_argv.empty());
  EXPECT_EQ(action.exit_code, 1);
  std::ifstream log(dir_ / "log.json");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  EXPECT_NE(line.find("no uffd"), std::string::npos) << line;
  EXPECT_FALSE(fs::exists(config_.state_dir + "/restored/c1")) << "start must not succeed";
}

}  // namespace
}  // namespace ferry::runtime

namespace ferry::runtime {
namespace {

TEST(PodLogsTest, TheCurrentLogIsTheNewestInKubeletsLayout) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(::testing::TempDir()) / ("pod-logs-" + std::to_string(getpid()));
  fs::remove_all(root);
  EXPECT_EQ(current_container_log(root.string(), "ns", "web", "uid-1", "app"), "");
  const fs::path dir = root / "ns_web_uid-1" / "app";
  fs::create_directories(dir);
  std::ofstream(dir / "0.log") << "old\n";
  std::ofstream(dir / "1.log") << "new\n";
  std::ofstream(dir / "notes.txt") << "not a log\n";
  fs::last_write_time(dir / "0.log", fs::file_time_type::clock::now() - std::chrono::hours(1));
  EXPECT_EQ(current_container_log(root.string(), "ns", "web", "uid-1", "app"),
            (dir / "1.log").string());
  fs::remove_all(root);
}

}  // namespace
}  // namespace ferry::runtime
