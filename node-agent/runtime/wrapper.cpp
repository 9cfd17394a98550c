#include "runtime/wrapper.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "api/annotations.h"
#include "checkpoint/page_server_address.h"
#include "checkpoint/page_transfer_tls.h"
#include "posix/atomic_file.h"
#include "posix/mountinfo.h"
#include "posix/read_file.h"
#include "process/subprocess.h"
#include "runtime/criu_proxy.h"
#include "runtime/lazy_pages_guard.h"

namespace ferry::runtime {
namespace fs = std::filesystem;
using nlohmann::json;
using posix::write_file_atomic;

namespace {

std::string marker_path(const WrapperConfig& c, const std::string& id) {
  return c.state_dir + "/restored/" + id;
}
std::string criu_conf_path(const WrapperConfig& c, const std::string& id) {
  return c.state_dir + "/criu/" + id + ".conf";
}

Result<json> read_spec(const std::string& bundle) {
  std::ifstream in(bundle + "/config.json");
  if (!in) return not_found("no config.json in bundle " + bundle);
  auto spec = json::parse(in, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) {
    return invalid_argument("config.json in bundle " + bundle + " is not valid JSON");
  }
  return spec;
}

std::string annotation(const json& spec, const char* key) {
  if (!spec.contains("annotations") || !spec["annotations"].is_object()) return {};
  return spec["annotations"].value(key, "");
}

// Points runc at this container's CRIU config file (creating a default one),
// so the agent can later choose options such as tcp-close for its checkpoint.
Status attach_criu_config(const WrapperConfig& config, const std::string& bundle, json& spec,
                          const std::string& id, const std::string& contents) {
  std::string conf = criu_conf_path(config, id);
  FERRY_RETURN_IF_ERROR(write_file_atomic(conf, contents, 0600));
  spec["annotations"][api::kCriuConfigAnnotation] = conf;
  return write_file_atomic(bundle + "/config.json", spec.dump(), 0644);
}

std::vector<std::string> passthrough(const WrapperConfig& config,
                                     const std::vector<std::string>& args) {
  std::vector<std::string> argv = {config.runtime};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::string work_path(const WrapperConfig& c, const std::string& id) {
  return c.state_dir + "/work/" + id;
}

// The last `n` lines of `path`, joined with " | ".
std::string tail(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) {
    out += (out.empty() ? "" : " | ") + lines[i];
  }
  return out.empty() ? "(no log at " + path + ")" : out;
}

// After a failed or finished PostCopy restore: a lazy-pages daemon still
// waiting (for a restore that never connected, or for pages that never
// came) is stopped, and cgroup-yard mounts a failed CRIU restore left in
// the work directory are detached.
void clean_lazy_restore(const WrapperConfig& config, const std::string& id) {
  const std::string work = work_path(config, id);
  int pid = 0;
  std::istringstream(posix::read_file(work + "/lazy-pages.pid").value_or("")) >> pid;
  if (pid > 0) {
    std::string cmdline =
        posix::read_file("/proc/" + std::to_string(pid) + "/cmdline").value_or("");
    // Only the daemon we started: a stale pid may name anything by now.
    if (cmdline.find("lazy-pages") != std::string::npos &&
        cmdline.find(work) != std::string::npos) {
      kill(pid, SIGKILL);
    }
  }
  std::vector<std::string> yards;
  for (const auto& m : posix::read_mountinfo()) {
    if (m.mount_point.rfind(work + "/.criu.cgyard.", 0) == 0) yards.push_back(m.mount_point);
  }
  for (auto it = yards.rbegin(); it != yards.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
}

// PATH, or what exec uses without one.
std::string search_path() {
  const char* path = std::getenv("PATH");
  return path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

// `name` as exec would find it in PATH (a name with a slash as it is), if
// it is executable; empty otherwise.
std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  std::istringstream dirs(search_path());
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// Points `criu` in the proxy directory at ferry-runc (once per node; an
// existing correct link is kept) and returns what runc's environment needs
// for the proxy to hold the restore of `id` until the verification's verdict.
Result<std::vector<std::pair<std::string, std::string>>> criu_proxy_env(const WrapperConfig& config,
                                                                        const std::string& id) {
  const std::string real = find_in_path(config.criu);
  if (real.empty()) return not_found("criu (" + config.criu + ") is not in PATH");
  std::error_code ec;
  const std::string self =
      config.self_exe.empty() ? fs::read_symlink("/proc/self/exe", ec).string() : config.self_exe;
  if (ec || self.empty()) return internal_error("cannot find ferry-runc's own binary");
  const std::string dir = criu_proxy_dir(config);
  const std::string link = dir + "/criu";
  if (fs::read_symlink(link, ec) != fs::path(self)) {
    fs::create_directories(dir, ec);
    const std::string tmp = link + ".tmp." + std::to_string(::getpid());
    fs::remove(tmp, ec);
    fs::create_symlink(self, tmp, ec);
    if (!ec) fs::rename(tmp, link, ec);
    if (ec) return internal_error("cannot link " + link + " to " + self + ": " + ec.message());
  }
  // A previous attempt's files must not speak for this one.
  const std::string error_file = criu_proxy_error_file(config, id);
  const std::string verdict_file = criu_proxy_verdict_file(config, id);
  fs::remove(error_file, ec);
  fs::remove(verdict_file, ec);
  return std::vector<std::pair<std::string, std::string>>{
      {"PATH", dir + ":" + search_path()},
      {kProxyRealCriuEnv, real},
      {kProxyVerdictFileEnv, verdict_file},
      {kProxyErrorFileEnv, error_file},
      {kProxyCriuWaitingEnv, criu_proxy_waiting_fifo(config, id)},
  };
}

std::string bundle_abs(const std::string& bundle) {
  std::error_code ec;
  auto p = fs::absolute(bundle, ec);
  return ec ? bundle : p.lexically_normal().string();
}

}  // namespace

Result<WrapperConfig> WrapperConfig::load() {
  WrapperConfig c;
  std::string path = "/etc/ferry/ferry-runc.json";
  if (const char* env = std::getenv("FERRY_RUNC_CONFIG"); env != nullptr && *env != '\0') {
    path = env;
  } else if (!fs::exists(path)) {
    return c;
  }
  std::ifstream in(path);
  if (!in) return not_found("ferry-runc config " + path + " cannot be read");
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("ferry-runc config " + path + " is not a JSON object");
  }
  c.runtime = j.value("runtime", c.runtime);
  c.snapshot_root = j.value("snapshotRoot", c.snapshot_root);
  c.state_dir = j.value("stateDir", c.state_dir);
  c.criu = j.value("criu", c.criu);
  c.pod_log_root = j.value("podLogRoot", c.pod_log_root);
  c.snapshot_wait_seconds = j.value("snapshotWaitSeconds", c.snapshot_wait_seconds);
  return c;
}

Result<std::vector<std::string>> lazy_pages_argv(const std::string& criu,
                                                 const std::string& image_dir,
                                                 const std::string& work_dir,
                                                 const std::string& page_server, bool tls) {
  auto server = checkpoint::parse_page_server(page_server);
  if (!server.ok()) return server.status();
  std::vector<std::string> argv{criu,
                                "lazy-pages",
                                "--page-server",
                                "--address",
                                server->host,
                                "--port",
                                server->port,
                                "--images-dir",
                                image_dir,
                                "--work-dir",
                                work_dir,
                                "--daemon",
                                "--pidfile",
                                work_dir + "/lazy-pages.pid",
                                "--log-file",
                                "lazy-pages.log"};
  if (tls) {
    for (const auto& [name, value] :
         checkpoint::criu_tls_options(image_dir + "/" + checkpoint::kPageTransferCaFile,
                                      image_dir + "/" + checkpoint::kPageTransferClientCertFile,
                                      image_dir + "/" + checkpoint::kPageTransferClientKeyFile)) {
      argv.push_back("--" + name);
      if (!value.empty()) argv.push_back(value);
    }
  }
  return argv;
}

Status start_lazy_pages_daemon(const std::vector<std::string>& argv, const std::string& work_dir,
                               const std::string& pid_file) {
  // The guard is this binary again (kLazyPagesGuardEnv); it detaches at
  // once and outlives us. With --daemon, CRIU's foreground process exits
  // once the socket listens (criu/uffd.c: cr_lazy_pages binds before it
  // daemonizes), and the guard writes that exit code to kLazyPagesStartedFile.
  std::error_code ec;
  fs::remove(work_dir + "/lazy-pages.socket", ec);
  fs::remove(work_dir + "/lazy-pages.pid", ec);
  const std::string started_file = work_dir + "/" + kLazyPagesStartedFile;
  fs::remove(started_file, ec);
  fs::remove(work_dir + "/" + kLazyPagesFailedFile, ec);
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) return internal_error("lazy-pages guard: cannot find ferry-runc itself: " + ec.message());
  auto guard = process::Subprocess::spawn(
      {.argv = {self},
       .env = {{kLazyPagesGuardEnv,
                encode_guard({.criu_argv = argv, .work_dir = work_dir, .pid_file = pid_file})}},
       .output_file = work_dir + "/lazy-pages-guard.out",
       .new_process_group = false});
  if (!guard.ok()) return guard.status().with_context("criu lazy-pages guard");
  // It forks its detached self and exits; anything else is a failed start.
  auto forked = guard->wait(std::chrono::seconds(5));
  if (forked.ok() && process::exit_code(*forked) != 0) {
    return internal_error("criu lazy-pages guard did not start: " +
                          tail(work_dir + "/lazy-pages-guard.out", 2));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string code;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(started_file);
    if (in >> code) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (code.empty()) {
    return internal_error("criu lazy-pages did not start within 30 s: " +
                          tail(work_dir + "/lazy-pages-guard.out", 2));
  }
  if (code != "0" || !fs::exists(work_dir + "/lazy-pages.socket")) {
    return internal_error(
        "criu lazy-pages failed to start: " + tail(work_dir + "/lazy-pages.log", 4) + " " +
        tail(work_dir + "/lazy-pages.out", 2));
  }
  return {};
}

std::string criu_proxy_dir(const WrapperConfig& config) {
  return config.state_dir + "/criu-proxy";
}
std::string criu_proxy_verdict_file(const WrapperConfig& config, const std::string& id) {
  return work_path(config, id) + "/verify-verdict";
}
std::string criu_proxy_error_file(const WrapperConfig& config, const std::string& id) {
  return work_path(config, id) + "/verify-error";
}
std::string criu_proxy_waiting_fifo(const WrapperConfig& config, const std::string& id) {
  return work_path(config, id) + "/criu-waiting";
}

std::string abandoned_marker(const std::string& snapshot_root, const std::string& migration_uid) {
  return snapshot_root + "/" + migration_uid + ".abandoned";
}

void report_error(const RuncArgs& args, const std::string& message) {
  std::string line = "ferry-runc: " + message;
  std::fprintf(stderr, "%s\n", line.c_str());
  if (args.log.empty()) return;
  std::ofstream log(args.log, std::ios::app);
  time_t now = time(nullptr);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  if (args.log_format == "json") {
    log << json{{"level", "error"}, {"msg", line}, {"time", stamp}}.dump() << "\n";
  } else {
    log << "time=\"" << stamp << "\" level=error msg=" << json(line).dump() << "\n";
  }
}

Action plan(const WrapperConfig& config, const std::vector<std::string>& args,
            const RestorePreparer& prepare, const LazyPagesStarter& start_lazy_pages) {
  auto parsed = parse_runc_args(args);
  // Anything we cannot read is the runtime's to judge, unchanged.
  if (!parsed.ok() || parsed->container_id.empty()) return {passthrough(config, args)};
  const RuncArgs& a = *parsed;
  const std::string& id = a.container_id;

  if (a.command == "start") {
    if (fs::exists(marker_path(config, id))) {
      // Restored by `create`: the process already runs. Nothing to start.
      std::error_code ec;
      fs::remove(marker_path(config, id), ec);
      return {{}, 0};
    }
    return {passthrough(config, args)};
  }
  if (a.command == "delete") {
    std::error_code ec;
    fs::remove(marker_path(config, id), ec);
    fs::remove(criu_conf_path(config, id), ec);
    fs::remove(criu_proxy_waiting_fifo(config, id), ec);  // left by a ferry-runc that died
    clean_lazy_restore(config, id);
    return {passthrough(config, args)};
  }
  if (a.command != "create") return {passthrough(config, args)};

  const std::string bundle = bundle_abs(a.bundle);
  auto spec = read_spec(bundle);
  if (!spec.ok()) return {passthrough(config, args)};  // runc reports it its own way
  const std::string restore_from = annotation(*spec, api::kRestoreFromAnnotation);
  const bool sandbox = annotation(*spec, api::kCriContainerType) == "sandbox";

  if (restore_from.empty() || sandbox) {
    Status s = attach_criu_config(config, bundle, *spec, id, "tcp-close\n");
    if (!s.ok()) {
      report_error(a, "create " + id + ": " + s.message());
      return {{}, 1};
    }
    return {passthrough(config, args)};
  }

  // Restore.
  std::string root = spec->value("/root/path"_json_pointer, std::string("rootfs"));
  RestoreRequest request{
      .migration_uid = restore_from,
      .pod_namespace = annotation(*spec, api::kCriSandboxNamespace),
      .pod_name = annotation(*spec, api::kCriSandboxName),
      .pod_uid = annotation(*spec, api::kCriSandboxUid),
      .container_name = annotation(*spec, api::kCriContainerName),
      .rootfs = fs::path(root).is_absolute() ? root : bundle + "/" + root,
  };
  auto prepared = prepare(config, request);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(config.snapshot_wait_seconds);
  // Not published yet, or published for a replacement its owner had not
  // created yet and not granted to this pod yet: both come soon.
  auto coming = [](const Status& s) {
    return s.reason() == "SnapshotNotFound" || s.reason() == "SnapshotNotGranted";
  };
  while (!prepared.ok() && coming(prepared.status()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    if (fs::exists(abandoned_marker(config.snapshot_root, restore_from), ec)) {
      prepared = Status(Code::kCancelled, "migration " + restore_from + " was rolled back",
                        "MigrationAbandoned");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    prepared = prepare(config, request);
  }
  if (!prepared.ok()) {
    report_error(a, "restore of container " + id + " refused: " + prepared.status().message());
    return {{}, 1};
  }
  Status s = attach_criu_config(config, bundle, *spec, id,
                                prepared->tcp_established ? "tcp-established\n" : "tcp-close\n");
  if (s.ok()) s = write_file_atomic(marker_path(config, id), restore_from + "\n", 0600);
  if (!s.ok()) {
    report_error(a, "restore of container " + id + ": " + s.message());
    return {{}, 1};
  }
  const std::string work = work_path(config, id);
  std::error_code ec;
  fs::create_directories(work, ec);
  std::vector<std::string> argv = {config.runtime};
  argv.insert(argv.end(), a.global_flags.begin(), a.global_flags.end());
  argv.insert(argv.end(),
              {"restore", "--detach", "--bundle", bundle, "--image-path", prepared->image_dir,
               "--work-path", work, "--manage-cgroups-mode", "ignore"});
  if (!a.pid_file.empty()) argv.insert(argv.end(), {"--pid-file", a.pid_file});
  if (!a.console_socket.empty()) argv.insert(argv.end(), {"--console-socket", a.console_socket});
  if (prepared->tcp_established) argv.emplace_back("--tcp-established");
  if (prepared->lazy_pages) {
    // PostCopy: the daemon serving page faults must listen before CRIU
    // restores, in the same work directory.
    auto daemon = lazy_pages_argv(config.criu, prepared->image_dir, work, prepared->page_server,
                                  prepared->page_transfer_tls);
    Status started = daemon.ok() ? start_lazy_pages(*daemon, work, a.pid_file) : daemon.status();
    if (!started.ok()) {
      fs::remove(marker_path(config, id), ec);
      report_error(a, "restore of container " + id + " (PostCopy): " + started.message());
      return {{}, 1};
    }
    argv.emplace_back("--lazy-pages");
  }
  argv.push_back(id);
  Action action{argv, 0, prepared->hold, prepared->inherit_fd};
  if (!prepared->unverified.empty()) {
    auto env = criu_proxy_env(config, id);
    if (env.ok() && prepared->verify_unverified) {
      action.env = std::move(env).value();
      action.verify = prepared->verify_unverified;
      action.verdict_file = criu_proxy_verdict_file(config, id);
      action.criu_waiting_fifo = criu_proxy_waiting_fifo(config, id);
      action.failure_reason_file = criu_proxy_error_file(config, id);
      action.failure_context = "restore of container " + id + " refused: ";
      action.report_args = a;
    } else {
      // No proxy: verify here, before CRIU reads anything, as slower but safe.
      std::fprintf(stderr, "ferry-runc: verifying before the restore (%s)\n",
                   env.ok() ? "no verification to run beside it" : env.status().message().c_str());
      Status verified = prepared->verify_unverified
                            ? prepared->verify_unverified(nullptr)
                            : internal_error("no verification for the memory images");
      if (!verified.ok()) {
        fs::remove(marker_path(config, id), ec);
        report_error(a, "restore of container " + id + " refused: " + verified.message());
        return {{}, 1};
      }
    }
  }
  return action;
}

}  // namespace ferry::runtime
