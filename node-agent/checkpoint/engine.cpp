#include "checkpoint/engine.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/annotations.h"
#include "checkpoint/page_server_address.h"
#include "checkpoint/page_transfer_tls.h"
#include "posix/atomic_file.h"

namespace ferry::checkpoint {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

uint64_t directory_bytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

Result<std::chrono::duration<double>> CheckpointEngine::freeze(const std::string& id) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  return freeze(*state);
}

Result<std::chrono::duration<double>> CheckpointEngine::freeze(const ContainerState& state) {
  auto start = Clock::now();
  if (state.status == "paused") return std::chrono::duration<double>(0);
  if (state.status != "running") {
    return Status(Code::kFailedPrecondition,
                  "container " + state.id + " is " + state.status + ", not running", "NotRunning");
  }
  FERRY_RETURN_IF_ERROR(runtime_.pause(state.id));
  return std::chrono::duration<double>(Clock::now() - start);
}

Status CheckpointEngine::write_criu_config(const ContainerState& state, TcpMode tcp,
                                           const std::string& network_lock,
                                           const std::string& extra) {
  auto it = state.annotations.find(api::kCriuConfigAnnotation);
  if (it == state.annotations.end()) {
    // Only the file carries what runc has no flag for: refuse what needs
    // it rather than dump without it.
    const char* missing = tcp != TcpMode::kEstablished
                              ? "close its TCP connections for a restore on another node"
                          : !network_lock.empty() ? "lock its network with the requested method"
                                                  : nullptr;
    if (missing == nullptr) return {};  // --tcp-established is runc's flag
    return Status(Code::kFailedPrecondition,
                  "container " + state.id +
                      " was not created through ferry-runc (no CRIU config file): cannot " +
                      missing + (network_lock.empty() ? "" : " (" + network_lock + ")"),
                  "NotOnFerryRuntime");
  }
  // Only what runc has no flag for; runc passes the file to CRIU as-is.
  // skip-in-flight: a client that connected while the endpoint was being
  // removed sits in the listen backlog, not yet accepted; CRIU cannot dump
  // such a half-open connection and would fail the whole migration. It is
  // dropped instead (the client sees a reset and retries, through the
  // Service, to the restored copy).
  // network-lock nftables: CRIU locks and unlocks the container's network
  // through libnftables in its own process; with iptables it runs
  // iptables-restore and friends, a dozen processes per migration, inside
  // the freeze window (bench/results/engine.md: 0.08-0.13 s per migration).
  std::string contents =
      tcp == TcpMode::kClose ? "tcp-close\nskip-in-flight\n" : "skip-in-flight\n";
  if (!network_lock.empty()) contents += "network-lock " + network_lock + "\n";
  contents += extra;
  return posix::write_file_atomic(it->second, contents, 0600).with_context("CRIU config");
}

Result<DumpResult> CheckpointEngine::dump(const DumpRequest& request) {
  DumpResult result;
  auto state = runtime_.state(request.container_id);
  if (!state.ok()) return state.status();
  FERRY_RETURN_IF_ERROR(write_criu_config(*state, request.tcp, request.network_lock));
  auto frozen = freeze(*state);
  if (!frozen.ok()) return frozen.status();
  result.freeze = *frozen;
  auto start = Clock::now();
  Status s = runtime_.checkpoint(request.container_id, {.image_dir = request.image_dir,
                                                        .work_dir = request.work_dir,
                                                        .leave_running = true,
                                                        .tcp = request.tcp});
  if (!s.ok()) return s;  // still frozen: the caller decides to thaw or retry
  result.dump = Clock::now() - start;
  result.image_bytes = directory_bytes(request.image_dir);
  return result;
}

Result<std::string> ensure_pipe_max_size(uint64_t bytes, const std::string& path) {
  uint64_t current = 0;
  {
    std::ifstream in(path);
    if (!(in >> current)) return internal_error("cannot read " + path);
  }
  if (current >= bytes) return std::string();
  {
    std::ofstream out(path);
    out << bytes << "\n";
    out.flush();
    if (!out) {
      return Status(Code::kFailedPrecondition,
                    "PostCopy needs " + path + " >= " + std::to_string(bytes) + " (it is " +
                        std::to_string(current) +
                        ") and it cannot be raised: " + std::strerror(errno),
                    "ModeUnsupportedOnNode");
    }
  }
  return "raised " + path + " from " + std::to_string(current) + " to " + std::to_string(bytes) +
         " for CRIU's lazy page server";
}

namespace {

// Waits for CRIU's "ready" byte on `fd`: Ok, DeadlineExceeded, or
// Internal when the writer went away without it (CRIU failed).
Status wait_status_byte(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status(Code::kDeadlineExceeded, "CRIU was not ready to serve pages");
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return internal_error(std::string("poll status fd: ") + std::strerror(errno));
    if (r == 0) continue;
    char byte = 1;
    ssize_t n = read(fd, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n == 1) return {};
    return Status(Code::kInternal, "CRIU exited before serving pages");
  }
}

// Freezes `id` again, a no-op when it is frozen already (runc refuses to
// pause a paused container). One runtime call in the usual case, where the
// container runs: the state is asked only when the pause fails.
Status freeze_again(OciRuntime& runtime, const std::string& id) {
  Status paused = runtime.pause(id);
  if (paused.ok()) return paused;
  auto state = runtime.state(id);
  return state.ok() && state->status == "paused" ? Status() : paused;
}

// The page transfer of a lazy dump. While it runs, CRIU holds the source's
// tasks stopped with ptrace. It thawed their cgroup once it held them
// (criu/seize.c: freeze_processes seizes the frozen tasks, then thaws the
// freezer; it writes FROZEN back when it lets go, because the cgroup was
// frozen before), and dump_lazy freezes it again as soon as CRIU serves
// pages: CRIU's death, alone or with its agent, then detaches tasks that
// stay frozen, and the source never runs user code next to the restored
// copy. Abandoning the transfer checks that once more before it stops CRIU.
class LazyTransfer final : public RunningCheckpoint {
 public:
  LazyTransfer(OciRuntime& runtime, std::string id, std::unique_ptr<RunningCheckpoint> inner)
      : runtime_(runtime), id_(std::move(id)), inner_(std::move(inner)) {}
  ~LazyTransfer() override {
    if (!inner_->finished()) {
      auto state = runtime_.state(id_);
      Status s = !state.ok()                  ? state.status()
                 : state->status == "running" ? runtime_.pause(id_)
                                              : Status();
      if (!s.ok()) {
        std::fprintf(stderr, "ferry: cannot re-freeze %s before stopping its page server: %s\n",
                     id_.c_str(), s.to_string().c_str());
      }
    }
    inner_.reset();  // stops runc and CRIU
  }
  Status wait(std::chrono::milliseconds timeout) override { return inner_->wait(timeout); }

 private:
  OciRuntime& runtime_;
  std::string id_;
  std::unique_ptr<RunningCheckpoint> inner_;
};

// Mints this dump's page transfer credentials, keeps the page server's in
// `work_dir`/tls and returns the CRIU config lines that use them.
Result<std::string> page_server_tls_config(const std::string& work_dir,
                                           const std::string& page_server,
                                           const std::string& container_id,
                                           PageTransferCredentials& credentials) {
  auto server = parse_page_server(page_server);
  if (!server.ok()) return server.status();
  auto minted = mint_page_transfer_credentials(server->host, container_id);
  if (!minted.ok()) return minted.status();
  credentials = std::move(minted).value();
  const std::string dir = work_dir + "/tls";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return internal_error("create " + dir + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  const std::string ca = dir + "/ca.pem", cert = dir + "/server.pem", key = dir + "/server-key.pem";
  FERRY_RETURN_IF_ERROR(posix::write_file_atomic(ca, credentials.ca_cert, 0600));
  FERRY_RETURN_IF_ERROR(posix::write_file_atomic(cert, credentials.server_cert, 0600));
  FERRY_RETURN_IF_ERROR(posix::write_file_atomic(key, credentials.server_key, 0600));
  std::string lines;
  for (const auto& [name, value] : criu_tls_options(ca, cert, key)) {
    lines += name + (value.empty() ? "" : " " + value) + "\n";
  }
  return lines;
}

struct Fd {
  int fd = -1;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

}  // namespace

Result<LazyDumpResult> CheckpointEngine::dump_lazy(const LazyDumpRequest& request,
                                                   store::SnapshotWriter& writer) {
  LazyDumpResult result;
  auto state = runtime_.state(request.container_id);
  if (!state.ok()) return state.status();
  // Read mode is a line of the container's CRIU config file; without the
  // file CRIU splices (request.read_pages_on_request).
  result.pages_read_on_request =
      request.read_pages_on_request && state->annotations.contains(api::kCriuConfigAnnotation);
  if (!result.pages_read_on_request) {
    // See kCriuLazyPipeBytes: without this the transfer fails after restore.
    auto raised = ensure_pipe_max_size(kCriuLazyPipeBytes, request.pipe_max_size_sysctl);
    if (!raised.ok()) return raised.status();
    if (!raised->empty()) std::fprintf(stderr, "ferry: %s\n", raised->c_str());
  }
  std::string criu_config = result.pages_read_on_request ? "lazy-dump-mode read\n" : "";
  PageTransferCredentials credentials;
  if (request.encrypt_transfer) {
    if (!state->annotations.contains(api::kCriuConfigAnnotation)) {
      return Status(Code::kFailedPrecondition,
                    "container " + request.container_id +
                        " was not created through ferry-runc (no CRIU config file): cannot "
                        "serve its pages over TLS",
                    "NotOnFerryRuntime");
    }
    // Before the freeze: minting takes a few milliseconds.
    auto tls = page_server_tls_config(request.work_dir, request.page_server, request.container_id,
                                      credentials);
    if (!tls.ok()) return tls.status().with_context("page transfer TLS");
    criu_config += *tls;
    result.encrypted = true;
  }
  FERRY_RETURN_IF_ERROR(write_criu_config(*state, request.tcp, request.network_lock, criu_config));
  const std::string images = request.work_dir + "/images";
  std::error_code ec;
  fs::create_directories(images, ec);
  if (ec || !fs::is_empty(images, ec)) {
    return Status(Code::kFailedPrecondition,
                  "lazy dump work directory " + images + " cannot be created or is not empty");
  }
  result.frozen_at = Clock::now();
  auto frozen = freeze(*state);
  if (!frozen.ok()) return frozen.status();
  result.freeze = *frozen;

  auto start = Clock::now();
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return internal_error("pipe: " + std::string(strerror(errno)));
  Fd read_end{p[0]}, write_end{p[1]};
  auto running =
      runtime_.start_checkpoint(request.container_id, {.image_dir = images,
                                                       .work_dir = request.work_dir,
                                                       .leave_running = true,
                                                       .tcp = request.tcp,
                                                       .lazy_pages = true,
                                                       .page_server = request.page_server,
                                                       .status_fd = write_end.fd});
  if (!running.ok()) return running.status();
  std::unique_ptr<RunningCheckpoint> transfer =
      std::make_unique<LazyTransfer>(runtime_, request.container_id, std::move(running).value());
  write_end.reset();  // only runc and CRIU hold it now: EOF means they died
  Status ready = wait_status_byte(read_end.fd, request.ready_timeout);
  if (!ready.ok()) {
    // Still frozen; the handle's destruction stops runc and CRIU.
    Status ended = transfer->wait(std::chrono::seconds(5));
    if (ready.code() != Code::kDeadlineExceeded && !ended.ok()) return ended;
    return ready.with_context("lazy checkpoint of " + request.container_id);
  }
  result.dump = Clock::now() - start;
  // CRIU thawed the cgroup when it seized the tasks (LazyTransfer): freeze
  // it again before the snapshot is published, which is when a target may
  // restore. From then on a CRIU that dies, alone or with this agent, lets
  // its tasks go into a frozen cgroup instead of running them beside the
  // restored copy. The runtime call runs beside the publish, both inside
  // the freeze window; std::async's future waits for it on every return.
  auto refrozen = std::async(std::launch::async, [this, &request] {
    return freeze_again(runtime_, request.container_id);
  });

  // The images are small (no memory): copy them into the store, with how
  // the target must restore.
  auto t_publish = Clock::now();
  for (const auto& entry : fs::directory_iterator(images, ec)) {
    if (!entry.is_regular_file()) continue;
    FERRY_RETURN_IF_ERROR(
        writer.add_file_from(entry.path().filename().string(), entry.path().string()));
  }
  if (ec) return internal_error("list " + images + ": " + ec.message());
  nlohmann::json options = {{"tcpEstablished", request.tcp == TcpMode::kEstablished},
                            {"lazyPages", true},
                            {"pageServer", request.page_server}};
  if (result.encrypted) {
    // What the target's `criu lazy-pages` presents and trusts.
    options["pageTransferTls"] = true;
    FERRY_RETURN_IF_ERROR(writer.add_file(kPageTransferCaFile, credentials.ca_cert));
    FERRY_RETURN_IF_ERROR(writer.add_file(kPageTransferClientCertFile, credentials.client_cert));
    FERRY_RETURN_IF_ERROR(writer.add_file(kPageTransferClientKeyFile, credentials.client_key));
  }
  // runtime::kRestoreOptionsFile, read by ferry-runc on the target.
  FERRY_RETURN_IF_ERROR(writer.add_file("restore-options.json", options.dump()));
  if (request.before_publish) FERRY_RETURN_IF_ERROR(request.before_publish(writer));
  if (Status s = refrozen.get(); !s.ok()) {
    return s.with_context("freeze " + request.container_id + " again while CRIU serves its pages");
  }
  auto published = writer.publish();
  if (!published.ok()) return published.status();
  result.publish = Clock::now() - t_publish;
  result.image_bytes = directory_bytes(images);
  result.transfer = std::move(transfer);
  return result;
}

Status CheckpointEngine::thaw(const std::string& id) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  if ((state->status == "paused" || state->status == "running") && state->pid > 0) {
    // Before the tasks run again: a dump whose CRIU was killed (say, with
    // its agent) left every packet of the container's namespace dropped.
    // (Its tasks may already run: CRIU thaws the cgroup once it holds them
    // with ptrace, and its death lets them go.)
    auto released = release_network_lock_(state->pid);
    if (!released.ok()) return released.status().with_context("thaw " + id);
    if (!released->empty()) {
      std::fprintf(stderr, "ferry: thaw %s: removed a network lock left by CRIU: %s\n", id.c_str(),
                   released->c_str());
    }
  }
  if (state->status == "running") return {};
  return runtime_.resume(id);
}

Status CheckpointEngine::kill_frozen(const std::string& id, std::chrono::seconds timeout) {
  auto state = runtime_.state(id);
  if (!state.ok()) return state.status();
  // Killed already (a retry, or the agent's cleanup after the switch):
  // nothing of it runs, which is all this promises.
  if (state->status == "stopped") return {};
  if (state->status != "paused") {
    // Killing a running source would let it run user code after the dump.
    return Status(Code::kFailedPrecondition,
                  "container " + id + " is " + state->status + ", not frozen: refusing to kill",
                  "NotFrozen");
  }
  // SIGKILL is queued for frozen tasks and acted on in the kernel on thaw,
  // before any return to user space. (runc's `kill --all` itself freezes,
  // signals and thaws on cgroup v1; on v2 it uses cgroup.kill. Thaw here
  // only if the runtime left the cgroup frozen.)
  FERRY_RETURN_IF_ERROR(runtime_.kill_all(id, SIGKILL));
  if (auto after = runtime_.state(id); after.ok() && after->status == "paused") {
    FERRY_RETURN_IF_ERROR(runtime_.resume(id));
  }
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto s = runtime_.state(id);
    if (!s.ok() || s->status == "stopped") return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status(Code::kDeadlineExceeded, "container " + id + " did not stop after SIGKILL");
}

}  // namespace ferry::checkpoint
