#include "process/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <thread>

namespace ferry::process {
namespace {

Status errno_status(const std::string& what) {
  return internal_error(what + ": " + std::strerror(errno));
}

// Builds the child's environment: the parent's, overridden by `extra`.
std::vector<std::string> child_env(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) merged[k] = v;
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (const auto& [k, v] : merged) out.push_back(k + "=" + v);
  return out;
}

// Where a child that could not join its cgroups says so (SpawnOptions::
// cgroup_procs): which one (-1: the namespace) and errno.
struct JoinFailure {
  int index = 0;
  int error = 0;
};

// The child's cgroups to join before exec, as plain C for after fork.
struct ChildCgroups {
  const char* ns = nullptr;
  const char* const* procs = nullptr;
  size_t count = 0;
  int report_fd = -1;  // CLOEXEC pipe: silent on success (closed by exec)
};

// In the child after fork: only async-signal-safe calls.
void join_cgroups(const ChildCgroups& c) {
  auto fail = [&](int index) {
    JoinFailure f{index, errno};
    (void)!write(c.report_fd, &f, sizeof f);
    _exit(126);
  };
  if (c.ns != nullptr) {
    int fd = open(c.ns, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWCGROUP) != 0) fail(-1);
    close(fd);
  }
  for (size_t i = 0; i < c.count; ++i) {
    int fd = open(c.procs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) fail(static_cast<int>(i));
    close(fd);
  }
}

// In the child after fork: only async-signal-safe calls until exec.
[[noreturn]] void exec_child(char* const* argv, char* const* envp, const char* dir, int out_fd,
                             int in_fd, int err_fd, bool group, const int* keep_fds = nullptr,
                             size_t nr_keep_fds = 0, const ChildCgroups* cgroups = nullptr) {
  if (cgroups != nullptr) join_cgroups(*cgroups);
  if (group) setpgid(0, 0);
  for (size_t i = 0; i < nr_keep_fds; ++i) fcntl(keep_fds[i], F_SETFD, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  if (in_fd >= 0) dup2(in_fd, STDIN_FILENO);
  dup2(out_fd, STDOUT_FILENO);
  dup2(err_fd, STDERR_FILENO);
  if (dir != nullptr && chdir(dir) != 0) _exit(127);
  execvpe(argv[0], argv, envp);
  // Only async-signal-safe calls here: tell the reader which binary is missing.
  const char msg[] = "exec failed (not found or not executable): ";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)!write(STDERR_FILENO, argv[0], strlen(argv[0]));
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(127);
}

}  // namespace

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int exit_code(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

Result<Subprocess> Subprocess::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return invalid_argument("spawn: empty argv");
  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env = child_env(options.env);
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  const char* path = options.output_file.empty() ? "/dev/null" : options.output_file.c_str();
  int out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return errno_status("open " + std::string(path));
  int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const bool joins = !options.cgroup_procs.empty() || !options.cgroup_namespace.empty();
  int report[2] = {-1, -1};
  if (joins && pipe2(report, O_CLOEXEC) != 0) {
    Status st = errno_status("pipe");
    close(out);
    close(in);
    return st;
  }
  std::vector<const char*> procs;
  for (const auto& p : options.cgroup_procs) procs.push_back(p.c_str());
  const ChildCgroups cgroups{
      .ns = options.cgroup_namespace.empty() ? nullptr : options.cgroup_namespace.c_str(),
      .procs = procs.data(),
      .count = procs.size(),
      .report_fd = report[1]};
  pid_t pid = fork();
  if (pid == 0) {
    exec_child(c_argv.data(), c_env.data(),
               options.working_dir.empty() ? nullptr : options.working_dir.c_str(),
               options.stdout_fd >= 0 ? options.stdout_fd : out,
               options.stdin_fd >= 0 ? options.stdin_fd : in,
               options.stderr_fd >= 0 ? options.stderr_fd : out, options.new_process_group,
               options.keep_fds.data(), options.keep_fds.size(), joins ? &cgroups : nullptr);
  }
  int fork_errno = errno;
  close(out);
  close(in);
  if (report[1] >= 0) close(report[1]);
  if (pid < 0) {
    if (report[0] >= 0) close(report[0]);
    errno = fork_errno;
    return errno_status("fork " + options.argv[0]);
  }
  // Also set the group from the parent: whichever runs first wins the race.
  if (options.new_process_group) setpgid(pid, pid);
  Subprocess child(pid, options.new_process_group);
  if (joins) {
    // The pipe stays silent and closes at exec once every cgroup is joined.
    JoinFailure f;
    ssize_t n = 0;
    do {
      n = read(report[0], &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == static_cast<ssize_t>(sizeof f)) {
      (void)child.wait(std::chrono::seconds(5));
      const std::string what = f.index < 0 ? "enter cgroup namespace " + options.cgroup_namespace
                                           : "join cgroup " + options.cgroup_procs[f.index];
      return internal_error(options.argv[0] + ": " + what + ": " + std::strerror(f.error));
    }
  }
  return child;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_), group_(other.group_), exit_status_(other.exit_status_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = other.pid_;
    group_ = other.group_;
    exit_status_ = other.exit_status_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() {
  stop();
}

bool Subprocess::running() {
  if (pid_ < 0 || exit_status_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = status;
    return false;
  }
  return r == 0;
}

Status Subprocess::signal(int sig) {
  if (pid_ < 0 || exit_status_) return failed_precondition("process has exited");
  int r = group_ ? kill(-pid_, sig) : kill(pid_, sig);
  if (r != 0 && errno == ESRCH && group_) r = kill(pid_, sig);
  if (r != 0) return errno_status("kill " + std::to_string(pid_));
  return {};
}

Result<int> Subprocess::wait(std::chrono::milliseconds timeout) {
  if (pid_ < 0) return failed_precondition("no process");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // A pidfd turns readable the moment the child exits (Linux 5.3+), so the
  // caller learns of it at once; polling waitpid added up to its sleep (50
  // ms) to every wait for a child that ran longer than a few ms, such as
  // ferry-runc's for `criu lazy-pages` to listen. It also works for a child
  // that has exited and is not reaped yet. Older kernels: poll.
  int pidfd = exit_status_ ? -1 : static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  auto pause = std::chrono::milliseconds(1);
  while (running()) {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (pidfd >= 0) ::close(pidfd);
      return Status(Code::kDeadlineExceeded, "process " + std::to_string(pid_) + " still running");
    }
    if (pidfd >= 0) {
      pollfd exited{pidfd, POLLIN, 0};
      (void)::poll(&exited, 1, static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX)));
    } else {
      std::this_thread::sleep_for(std::min(pause, left));
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  if (!exit_status_) {
    return internal_error("process " + std::to_string(pid_) + " was reaped by someone else");
  }
  return *exit_status_;
}

void Subprocess::stop(std::chrono::milliseconds grace) {
  if (pid_ < 0) return;
  if (running()) {
    (void)signal(SIGTERM);
    if (!wait(grace).ok()) {
      (void)signal(SIGKILL);
      (void)wait(std::chrono::seconds(30));
    }
  }
  // Reap stragglers of the group (grandchildren) that ignored SIGTERM.
  if (group_) kill(-pid_, SIGKILL);
  pid_ = -1;
}

Result<Output> run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                   const std::string& stdin_data) {
  // exec failures show up as exit code 127 with nothing on stdout.
  if (argv.empty()) return invalid_argument("run: empty argv");
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return errno_status("pipe");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return errno_status("pipe");
  }
  if (pipe2(in_pipe, O_CLOEXEC) != 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return errno_status("pipe");
  }
  std::vector<std::string> args = argv;
  std::vector<std::string> env = child_env({});
  auto c_argv = c_strings(args);
  auto c_env = c_strings(env);
  pid_t pid = fork();
  if (pid == 0) {
    exec_child(c_argv.data(), c_env.data(), nullptr, out_pipe[1], in_pipe[0], err_pipe[1], true);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(in_pipe[0]);
  if (pid < 0) {
    for (int fd : {out_pipe[0], err_pipe[0], in_pipe[1]}) close(fd);
    return errno_status("fork " + argv[0]);
  }
  setpgid(pid, pid);
  Subprocess child(pid, true);  // kills and reaps on every early return

  Output result;
  size_t written = 0;
  if (stdin_data.empty()) {
    close(in_pipe[1]);
    in_pipe[1] = -1;
  } else {
    fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      for (int fd : {out_pipe[0], err_pipe[0], in_pipe[1]}) {
        if (fd >= 0) close(fd);
      }
      child.stop(std::chrono::milliseconds(500));
      return Status(Code::kDeadlineExceeded,
                    argv[0] + " did not finish within " + std::to_string(timeout.count()) + "ms");
    }
    pollfd fds[3] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}, {in_pipe[1], POLLOUT, 0}};
    int r = poll(fds, 3, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        (i == 0 ? out_pipe[0] : err_pipe[0]) = -1;
        --open_fds;
      }
    }
    if (in_pipe[1] >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      ssize_t n = write(in_pipe[1], stdin_data.data() + written, stdin_data.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) written = stdin_data.size();
      if (written == stdin_data.size()) {
        close(in_pipe[1]);
        in_pipe[1] = -1;
      }
    }
  }
  if (in_pipe[1] >= 0) close(in_pipe[1]);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  auto status = child.wait(std::max(left, std::chrono::milliseconds(1)));
  if (!status.ok()) {
    child.stop(std::chrono::milliseconds(500));
    return Status(Code::kDeadlineExceeded,
                  argv[0] + " did not finish within " + std::to_string(timeout.count()) + "ms");
  }
  result.exit_code = exit_code(*status);
  return result;
}

}  // namespace ferry::process
