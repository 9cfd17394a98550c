// Real containers for node-agent integration tests, driven the way
// containerd's runc shim drives a runtime: an image directory, an overlayfs
// rootfs per container (so the writable layer is a real upper dir), a
// network namespace per container (the pod sandbox's), stdio on pipes the
// harness reads (the shim's), and `ferry-runc create`/`start` with the
// shim's argv. Everything is torn down by destructors.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>

#include "process/subprocess.h"
#include "wait_until.h"

namespace ferry::testing {

namespace fs = std::filesystem;
using nlohmann::json;

inline std::string tool(const std::string& name) {
  const char* bin = std::getenv("FERRY_TOOL_BIN");
  return bin ? std::string(bin) + "/" + name : name;
}

inline bool run_ok(const std::vector<std::string>& argv, std::string* out = nullptr) {
  auto r = process::run(argv, std::chrono::seconds(120));
  if (out) *out = r.ok() ? r->out + r->err : r.status().to_string();
  return r.ok() && r->exit_code == 0;
}

// CRIU's network lock method the node agent chooses here: nftables where
// CRIU and the kernel support it (node-agent/main.cpp), else CRIU's default.
inline std::string agent_network_lock() {
  static const bool nftables =
      run_ok({tool("criu"), "check", "--feature", "network_lock_nftables"});
  return nftables ? "nftables" : "";
}

// Binds `source` at `target`, so the container's bundle has its overlayfs
// rootfs at <bundle>/rootfs, where the agent looks for the writable layer.
class BindMount {
 public:
  BindMount(const std::string& source, const std::string& target) : target_(target) {
    fs::create_directories(target_);
    mounted_ = ::mount(source.c_str(), target_.c_str(), nullptr, MS_BIND, nullptr) == 0;
  }
  ~BindMount() {
    if (mounted_) ::umount2(target_.c_str(), MNT_DETACH);
  }
  BindMount(const BindMount&) = delete;
  BindMount& operator=(const BindMount&) = delete;
  bool mounted() const { return mounted_; }

 private:
  std::string target_;
  bool mounted_ = false;
};

// The cgroup version the runtime sees: 2 where /sys/fs/cgroup is the unified
// hierarchy (CTest's *_cgroup2 variants mount one in a private mount
// namespace, tests/integration/node-agent/in_cgroup2.sh), else 1.
inline int cgroup_version() {
  struct statfs st {};
  return ::statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC ? 2 : 1;
}

// The cgroup version a test run was started for (FERRY_TEST_CGROUP, set by
// in_cgroup2.sh), or 0 when any will do.
inline int expected_cgroup_version() {
  const char* v = std::getenv("FERRY_TEST_CGROUP");
  return v ? std::atoi(v) : 0;
}

// The state letter of /proc/<pid>/stat ('R', 'S', 'T' stopped by a
// signal, 'Z' zombie, ...), or 'X' when the process is gone.
inline char process_state(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 'X';
  const auto paren = stat.rfind(')');  // the command name may hold anything
  return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : 'X';
}

// The kernel's freezer state of `pid`'s cgroup, read from the cgroup itself
// rather than from the runtime: "frozen", "thawed", or what was unreadable.
// cgroup v2: cgroup.events "frozen 0|1" of the 0:: path; v1: freezer.state.
inline std::string cgroup_freezer(int pid) {
  // /proc/<pid>/cgroup lines are "<id>:<controllers>:<path>"; v2's is "0::<path>".
  const int version = cgroup_version();
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  const std::string wanted = version == 2 ? "0::" : ":freezer:";
  std::string line, path;
  while (std::getline(in, line)) {
    const auto at = line.find(wanted);
    const bool match = wanted == "0::" ? at == 0 : at != std::string::npos;
    if (match) path = line.substr(at + wanted.size());
  }
  if (path.empty()) return "(no " + wanted + " line for pid " + std::to_string(pid) + ")";
  if (version == 2) {
    if (path == "/") return "(pid " + std::to_string(pid) + " is in the root cgroup)";
    std::ifstream events("/sys/fs/cgroup" + path + "/cgroup.events");
    std::string key, value;
    while (events >> key >> value) {
      if (key == "frozen") return value == "1" ? "frozen" : "thawed";
    }
    return "(no cgroup.events in " + path + ")";
  }
  std::ifstream state("/sys/fs/cgroup/freezer" + path + "/freezer.state");
  std::string value;
  if (!(state >> value)) return "(no freezer.state in " + path + ")";
  return value == "FROZEN" ? "frozen" : value == "THAWED" ? "thawed" : value;
}

// A network namespace, like a pod sandbox's (loopback up).
class NetNs {
 public:
  explicit NetNs(std::string name) : name_(std::move(name)) {
    run_ok({"ip", "netns", "add", name_});
    run_ok({"ip", "-n", name_, "link", "set", "lo", "up"});
  }
  ~NetNs() { run_ok({"ip", "netns", "del", name_}); }
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }

 private:
  std::string name_;
};

// lower (the image) + upper + work, mounted at merged.
class OverlayRootfs {
 public:
  OverlayRootfs(const std::string& image, const std::string& dir) : dir_(dir) {
    for (const char* d : {"upper", "work", "merged"}) fs::create_directories(dir_ + "/" + d);
    std::string opts =
        "lowerdir=" + image + ",upperdir=" + dir_ + "/upper,workdir=" + dir_ + "/work";
    mounted_ = mount("overlay", merged().c_str(), "overlay", 0, opts.c_str()) == 0;
  }
  ~OverlayRootfs() {
    if (mounted_) umount2(merged().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  std::string merged() const { return dir_ + "/merged"; }
  std::string upper() const { return dir_ + "/upper"; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

// The statekeeper image: the static binary and the directories runc needs.
inline void make_image(const std::string& dir, const std::string& statekeeper) {
  for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(dir + "/" + d);
  fs::permissions(dir + "/tmp", fs::perms::all | fs::perms::sticky_bit);
  fs::copy_file(statekeeper, dir + "/statekeeper", fs::copy_options::overwrite_existing);
}

// A working directory for node-agent tests and benchmarks: the statekeeper
// image, an (empty) snapshot store, and ferry-runc's configuration pointing
// at the pinned runc and CRIU, the store and a state dir; ferry-runc finds it
// through FERRY_RUNC_CONFIG.
inline void prepare_lab(const std::string& dir, const std::string& statekeeper) {
  make_image(dir + "/image", statekeeper);
  fs::create_directories(dir + "/snapshots");
  json cfg = {{"runtime", tool("runc")},
              {"criu", tool("criu")},
              {"snapshotRoot", dir + "/snapshots"},
              {"stateDir", dir + "/state"}};
  std::ofstream(dir + "/ferry-runc.json") << cfg.dump();
  setenv("FERRY_RUNC_CONFIG", (dir + "/ferry-runc.json").c_str(), 1);
}

// Reads a pipe into a string on a thread, like a shim's log copier.
class PipeReader {
 public:
  PipeReader() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
      read_fd_ = p[0];
      write_fd_ = p[1];
    }
    thread_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = read(read_fd_, buf, sizeof buf)) > 0) {
        std::lock_guard lock(mu_);
        text_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  // Call after every process holding the write end has exited (the
  // container's owner kills it first), so the reader sees EOF.
  ~PipeReader() {
    close_write_end();
    if (thread_.joinable()) thread_.join();
    close(read_fd_);
  }
  int write_fd() const { return write_fd_; }
  void close_write_end() {
    if (write_fd_ >= 0) close(write_fd_);
    write_fd_ = -1;
  }
  std::string text() {
    std::lock_guard lock(mu_);
    return text_;
  }

 private:
  int read_fd_ = -1, write_fd_ = -1;
  std::mutex mu_;
  std::string text_;
  std::thread thread_;
};

struct PodIdentity {
  std::string ns = "default";
  std::string name;
  std::string uid;
  std::string container = "app";
};

// A bundle (config.json from `runc spec`, adapted) for the statekeeper.
inline json make_spec(const std::string& rootfs, const std::string& netns_path, int mem_mib,
                      const PodIdentity& pod, const std::string& restore_from = {}) {
  std::string out;
  std::string tmp = fs::temp_directory_path() / ("ferry-spec-" + std::to_string(getpid()));
  fs::create_directories(tmp);
  std::string why;
  const bool made = run_ok({tool("runc"), "spec", "--bundle", tmp}, &why);
  std::ifstream in(tmp + "/config.json");
  json spec = json::parse(in, nullptr, /*allow_exceptions=*/false);
  fs::remove_all(tmp);
  if (!made || !spec.is_object()) {
    throw std::runtime_error("`" + tool("runc") + " spec` gave no config.json: " + why);
  }
  spec["root"] = {{"path", rootfs}, {"readonly", false}};
  spec["process"]["terminal"] = false;
  spec["process"]["args"] = {"/statekeeper", "--mem-mib", std::to_string(mem_mib), "--port",
                             "7777"};
  for (auto& ns : spec["linux"]["namespaces"]) {
    if (ns["type"] == "network") ns["path"] = netns_path;
  }
  spec["annotations"] = {{"io.kubernetes.cri.container-type", "container"},
                         {"io.kubernetes.cri.container-name", pod.container},
                         {"io.kubernetes.cri.sandbox-namespace", pod.ns},
                         {"io.kubernetes.cri.sandbox-name", pod.name},
                         {"io.kubernetes.cri.sandbox-uid", pod.uid}};
  if (!restore_from.empty()) spec["annotations"]["ferry.dev/restore-from"] = restore_from;
  return spec;
}

// Writes bundle `dir`/config.json for the statekeeper on `rootfs` in `ns`.
inline void write_bundle(const std::string& dir, const std::string& rootfs, const NetNs& ns,
                         int mem_mib, const PodIdentity& pod,
                         const std::string& restore_from = {}) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json")
      << make_spec(rootfs, ns.path(), mem_mib, pod, restore_from).dump();
}

// One container, created and started through ferry-runc as the shim would.
class ShimContainer {
 public:
  ShimContainer(std::string id, std::string bundle, std::string runc_root, std::string ferry_runc)
      : id_(std::move(id)),
        bundle_(std::move(bundle)),
        root_(std::move(runc_root)),
        ferry_runc_(std::move(ferry_runc)) {}
  ~ShimContainer() {
    run_ok({ferry_runc_, "--root", root_, "kill", "--all", id_, "KILL"});
    for (int i = 0; i < 100 && state_status() == "running"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    run_ok({ferry_runc_, "--root", root_, "delete", "--force", id_});
  }

  // `ferry-runc create` then `start`, as containerd's shim runs them.
  // Returns the exit code of create (start is skipped when create fails).
  int create_and_start() {
    std::vector<std::string> global = {ferry_runc_, "--root",       root_, "--log",
                                       log_path(),  "--log-format", "json"};
    auto create = global;
    create.insert(create.end(), {"create", "--bundle", bundle_, "--pid-file", pid_path(), id_});
    if (int code = run_with_shim_stdio(create); code != 0) return code;
    auto start = global;
    start.insert(start.end(), {"start", id_});
    auto r = process::run(start, std::chrono::minutes(1));
    return r.ok() ? r->exit_code : -1;
  }

  // `<runtime> restore --detach` of the checkpoint in `image_dir` as this
  // container, with the shim's stdio; `flags` go before the id. Returns the
  // exit code. (For plain runc; ferry-runc restores through create.)
  int restore(const std::string& image_dir, const std::string& work_dir,
              const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {ferry_runc_, "--root",      root_,   "restore",
                                     "--detach",  "--bundle",    bundle_, "--image-path",
                                     image_dir,   "--work-path", work_dir};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(id_);
    return run_with_shim_stdio(argv);
  }

  // Runs `argv` with the shim's stdio (the container's output pipe as
  // stdout and stderr, no stdin), as the shim runs a runtime command that
  // starts the container's process, which inherits them. Returns its exit
  // code, -1 when it could not run or did not end within 5 minutes.
  int run_with_shim_stdio(const std::vector<std::string>& argv) {
    auto p = process::Subprocess::spawn({.argv = argv,
                                         .stdin_fd = -1,
                                         .stdout_fd = stdout_.write_fd(),
                                         .stderr_fd = stdout_.write_fd()});
    if (!p.ok()) return -1;
    auto status = p->wait(std::chrono::minutes(5));
    return status.ok() ? process::exit_code(*status) : -1;
  }

  std::string state_status() {
    auto r = process::run({ferry_runc_, "--root", root_, "state", id_});
    if (!r.ok() || r->exit_code != 0) return "absent";
    return json::parse(r->out, nullptr, false).value("status", "");
  }
  int state_pid() {
    auto r = process::run({ferry_runc_, "--root", root_, "state", id_});
    if (!r.ok() || r->exit_code != 0) return -1;
    return json::parse(r->out, nullptr, false).value("pid", -1);
  }
  // The kernel's freezer state of the container's cgroup (cgroup_freezer).
  std::string freezer() { return cgroup_freezer(state_pid()); }
  int pid_file_pid() {
    std::ifstream in(pid_path());
    int pid = -1;
    in >> pid;
    return pid;
  }
  std::string log_path() const { return bundle_ + "/log.json"; }
  std::string pid_path() const { return bundle_ + "/init.pid"; }
  std::string output() { return stdout_.text(); }
  const std::string& id() const { return id_; }

 private:
  std::string id_, bundle_, root_, ferry_runc_;
  PipeReader stdout_;
};

// One request/response line with the statekeeper listening on `port` of
// 127.0.0.1 inside `netns` (empty: this process's namespace). The socket is
// made in the namespace by a thread that joins it (network namespaces are
// per thread), so a probe costs a round trip, not the start of `ip netns
// exec` and a shell (tens of ms here), which timed restores would include.
inline std::string ask_port(const std::string& netns, int port, const std::string& cmd) {
  std::string answer;
  std::thread([&] {
    auto fail = [&](const std::string& what) {
      answer = "(" + what + ": " + std::strerror(errno) + ")";
    };
    if (!netns.empty()) {
      int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0) return fail("open netns " + netns);
      int joined = ::setns(ns, CLONE_NEWNET);
      ::close(ns);
      if (joined != 0) return fail("setns " + netns);
    }
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail("socket");
    // SO_SNDTIMEO bounds connect(): a SYN dropped by CRIU's network lock (a
    // restore not finished yet) would be resent only after 1 s, so fail
    // fast instead and let the caller poll again.
    timeval connect_timeout{.tv_sec = 0, .tv_usec = 20000};
    timeval timeout{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &connect_timeout, sizeof connect_timeout);
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const std::string line = cmd + "\n";
    std::string got;
    char c = 0;
    ssize_t n = 0;
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      fail("connect");
    } else if (::send(s, line.data(), line.size(), MSG_NOSIGNAL) !=
               static_cast<ssize_t>(line.size())) {
      fail("send");
    } else {
      while ((n = ::recv(s, &c, 1, 0)) == 1 && c != '\n') got += c;
      if (n < 0) {
        fail("receive");
      } else {
        answer = got;
      }
    }
    ::close(s);
  }).join();
  return answer;
}

inline std::string ask(const std::string& netns, const std::string& cmd) {
  return ask_port(netns, 7777, cmd);
}

// The TCP sockets of `netns` with their kernel state (ss: timers, rto,
// windows, queues), for the failure message of a connection that stopped
// carrying data.
inline std::string tcp_sockets(const std::string& netns) {
  std::string out;
  run_ok({"ip", "netns", "exec", netns, "ss", "-tanoiem"}, &out);
  return out;
}

}  // namespace ferry::testing
