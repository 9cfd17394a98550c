#include "runtime/lazy_pages_guard.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "posix/atomic_file.h"
#include "process/subprocess.h"

namespace ferry::runtime {
namespace {

std::string describe(int status) {
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "exited with " + std::to_string(WEXITSTATUS(status));
}

bool failed(int status) {
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

// glibc 2.36's <sys/pidfd.h> lacks C linkage for C++: the system calls.
int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}
int pidfd_kill(int pidfd) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0));
}

}  // namespace

std::string encode_guard(const LazyPagesGuard& guard) {
  return nlohmann::json{{"argv", guard.criu_argv},
                        {"workDir", guard.work_dir},
                        {"pidFile", guard.pid_file},
                        {"pidFileWaitMs", guard.pid_file_wait.count()}}
      .dump();
}

Result<LazyPagesGuard> decode_guard(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("argv") || !j["argv"].is_array()) {
    return invalid_argument("lazy-pages guard: bad description " + json);
  }
  LazyPagesGuard g;
  for (const auto& a : j["argv"]) {
    if (!a.is_string()) return invalid_argument("lazy-pages guard: bad argv in " + json);
    g.criu_argv.push_back(a.get<std::string>());
  }
  g.work_dir = j.value("workDir", "");
  g.pid_file = j.value("pidFile", "");
  g.pid_file_wait = std::chrono::milliseconds(j.value("pidFileWaitMs", int64_t{60000}));
  if (g.criu_argv.empty() || g.work_dir.empty()) {
    return invalid_argument("lazy-pages guard: no command or work dir in " + json);
  }
  return g;
}

int run_lazy_pages_guard(const LazyPagesGuard& g) {
  const std::string started = g.work_dir + "/" + kLazyPagesStartedFile;
  // CRIU's --daemon double-forks; as the subreaper, the guard gets the
  // daemon as its child when the foreground process exits.
  (void)::prctl(PR_SET_CHILD_SUBREAPER, 1);
  auto child = process::Subprocess::spawn({.argv = g.criu_argv,
                                           .output_file = g.work_dir + "/lazy-pages.out",
                                           .new_process_group = false});
  if (!child.ok()) {
    (void)posix::write_file_atomic(started, "127\n", 0600);
    return 127;
  }
  auto ended = child->wait(std::chrono::seconds(30));
  const int code = ended.ok() ? process::exit_code(*ended) : 124;
  (void)posix::write_file_atomic(started, std::to_string(code) + "\n", 0600);
  if (code != 0) return code;

  // The daemon (and nothing else) is this process's child now. Meanwhile
  // the container's init is pinned with a pidfd as soon as runc writes its
  // pid file, so that a kill can never reach a later process given the
  // same pid (the container may end, and its pid be reused, before the
  // daemon fails).
  int pidfd = -1, victim = 0;
  auto pin = [&] {
    if (pidfd >= 0 || g.pid_file.empty()) return;
    std::ifstream in(g.pid_file);
    int pid = 0;
    if (!(in >> pid) || pid <= 1) return;
    pidfd = pidfd_open(pid);
    if (pidfd >= 0) victim = pid;
  };
  int worst = 0;
  bool any = false;
  for (;;) {
    pin();
    // Polled until the init is pinned (or there is none to pin), then
    // blocking until the daemon ends.
    const bool pinned = pidfd >= 0 || g.pid_file.empty();
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, pinned ? 0 : WNOHANG);
    if (pid > 0) {
      any = true;
      if (failed(status)) worst = status;
      continue;
    }
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) break;  // ECHILD: the daemon is done
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!any || !failed(worst)) return 0;

  // Pages are missing: the container must not run on zeros. A restore
  // still running when the daemon failed may write the pid file later.
  std::string why = "criu lazy-pages " + describe(worst) + " before every page arrived";
  const auto deadline = std::chrono::steady_clock::now() + g.pid_file_wait;
  while (pidfd < 0 && !g.pid_file.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pin();
  }
  if (pidfd >= 0 && pidfd_kill(pidfd) == 0) {
    why += ": killed the restored container (pid " + std::to_string(victim) + ")";
  } else if (pidfd >= 0) {
    why += ": the restored container (pid " + std::to_string(victim) +
           ") could not be killed: " + std::strerror(errno);
  } else {
    why += ": no restored container to kill (no live pid in " + g.pid_file + ")";
  }
  if (pidfd >= 0) ::close(pidfd);
  (void)posix::write_file_atomic(g.work_dir + "/" + kLazyPagesFailedFile, why + "\n", 0600);
  std::fprintf(stderr, "ferry-runc (lazy-pages guard): %s\n", why.c_str());
  return 1;
}

}  // namespace ferry::runtime
