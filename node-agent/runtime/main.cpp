// ferry-runc: the OCI runtime wrapper registered as the `ferry` RuntimeClass
// handler. Wiring only; the decisions are in wrapper.cpp (DESIGN.md §2).
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/build_info.h"
#include "process/subprocess.h"
#include "runtime/criu_proxy.h"
#include "runtime/criu_waiting.h"
#include "runtime/lazy_pages_guard.h"
#include "runtime/restore_source.h"
#include "runtime/wrapper.h"

namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// Started as `criu` (by runc, from the proxy directory ferry-runc put first
// in its PATH): the CRIU proxy, configured through the environment.
int criu_proxy_main(const std::vector<std::string>& args) {
  // ferry-runc, which started runc, verifies; the proxy waits for its verdict.
  const std::string verdict = env_or_empty(ferry::runtime::kProxyVerdictFileEnv);
  std::function<std::optional<ferry::Status>()> read;
  if (!verdict.empty()) read = [verdict] { return ferry::runtime::read_verdict(verdict); };
  std::function<bool()> criu_waits;
  if (std::string fifo = env_or_empty(ferry::runtime::kProxyCriuWaitingEnv); !fifo.empty()) {
    criu_waits = [fifo] { return ferry::runtime::tell_criu_waiting(fifo); };
  }
  return ferry::runtime::run_criu_proxy(env_or_empty(ferry::runtime::kProxyRealCriuEnv), args, read,
                                        env_or_empty(ferry::runtime::kProxyErrorFileEnv),
                                        criu_waits);
}

[[noreturn]] void exec_or_die(std::vector<std::string>& argv) {
  auto c_argv = ferry::process::c_strings(argv);
  execvp(c_argv[0], c_argv.data());
  std::perror(("ferry-runc: cannot run " + argv[0]).c_str());
  _exit(127);
}

// Runs the restore as a child and, when it fails, reports the proxy's
// reason last (wrapper.h, Action::failure_reason_file). The verification the
// proxy waits for starts first, beside runc and CRIU.
int run_and_report(ferry::runtime::Action& action) {
  auto c_argv = ferry::process::c_strings(action.exec_argv);  // no allocation after fork
  if (action.verify) {
    // Made before runc starts, so the proxy finds a reader. Without it the
    // verification only lacks its late worker.
    std::shared_ptr<ferry::store::LateStart> criu_waits;
    if (auto fifo = ferry::runtime::CriuWaitingFifo::create(action.criu_waiting_fifo); fifo.ok()) {
      criu_waits = std::move(fifo).value();
    }
    // Copies: the thread may outlive main's locals.
    std::thread([verify = action.verify, file = action.verdict_file, args = action.report_args,
                 context = action.failure_context, criu_waits] {
      ferry::Status written = ferry::runtime::write_verdict(file, verify(criu_waits.get()));
      if (!written.ok()) {
        // The proxy would hold CRIU until the shim's deadline: fail now.
        // Exiting takes runc along (PR_SET_PDEATHSIG), and with runc gone
        // the proxy aborts the restore, so no restored task runs.
        ferry::runtime::report_error(
            args, context + "cannot pass the verification's verdict on: " + written.message());
        _exit(1);
      }
    }).detach();  // a restore that fails first ends the process without waiting
  }
  pid_t child = fork();
  if (child < 0) {
    std::perror("ferry-runc: fork");
    return 1;
  }
  if (child == 0) {
    // The shim kills the runtime it waits for on a timeout: take runc along.
    // Only async-signal-safe calls here: the verification thread runs.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp(c_argv[0], c_argv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) {
      std::perror("ferry-runc: waitpid");
      return 1;
    }
  }
  const int code = ferry::process::exit_code(status);
  if (code != 0) {
    std::ifstream in(action.failure_reason_file);
    std::string reason;
    std::getline(in, reason);
    if (!reason.empty()) {
      ferry::runtime::report_error(action.report_args, action.failure_context + reason);
    }
  }
  return code;
}

// ferry-runc started as the guard of a PostCopy restore's `criu
// lazy-pages` (lazy_pages_guard.h): detaches (its parent, ferry-runc
// create, waits only for this first process) and watches the daemon.
int lazy_pages_guard_main(const char* description) {
  auto guard = ferry::runtime::decode_guard(description);
  if (!guard.ok()) {
    std::fprintf(stderr, "ferry-runc: %s\n", guard.status().message().c_str());
    return 2;
  }
  ::unsetenv(ferry::runtime::kLazyPagesGuardEnv);  // not for CRIU
  pid_t child = fork();
  if (child < 0) {
    std::perror("ferry-runc (lazy-pages guard): fork");
    return 1;
  }
  if (child > 0) return 0;
  (void)setsid();  // out of the shim's process group: the guard outlives the restore
  return ferry::runtime::run_lazy_pages_guard(*guard);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (argc > 0 && std::filesystem::path(argv[0]).filename() == "criu") {
    return criu_proxy_main(args);
  }
  if (const char* guard = std::getenv(ferry::runtime::kLazyPagesGuardEnv); guard != nullptr) {
    return lazy_pages_guard_main(guard);
  }
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h" || args[0] == "--version")) {
    if (args[0] == "--version") {
      std::printf("ferry-runc version %s\n", ferry::cli::kVersion);
    } else {
      std::printf(
          "ferry-runc - OCI runtime wrapper: passes every call to the real runtime (runc);\n"
          "`create` of a container annotated ferry.dev/restore-from becomes a CRIU restore.\n\n"
          "Usage: ferry-runc [runc global flags] <command> [flags] <container-id>\n"
          "Config: $FERRY_RUNC_CONFIG or /etc/ferry/ferry-runc.json\n"
          "  {\"runtime\": \"/usr/local/sbin/runc\", \"snapshotRoot\": "
          "\"/var/lib/ferry/snapshots\",\n"
          "   \"stateDir\": \"/run/ferry\"}\n");
    }
    return 0;
  }
  auto config = ferry::runtime::WrapperConfig::load();
  if (!config.ok()) {
    std::fprintf(stderr, "ferry-runc: %s\n", config.status().message().c_str());
    return 1;
  }
  auto action = ferry::runtime::plan(*config, args, ferry::runtime::prepare_from_store);
  if (action.exec_argv.empty()) return action.exit_code;
  if (action.inherit_fd >= 0) {
    // runc restore inherits the snapshot's lock; runc closes stray fds
    // before the container starts, so the container never sees it.
    int flags = fcntl(action.inherit_fd, F_GETFD);
    if (flags >= 0) fcntl(action.inherit_fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  for (const auto& [name, value] : action.env) setenv(name.c_str(), value.c_str(), 1);
  if (!action.failure_reason_file.empty()) {
    const int code = run_and_report(action);
    std::fflush(nullptr);
    // _exit: the verification thread may still run (a restore that failed
    // first), and atexit handlers (OpenSSL's among them) must not run under it.
    _exit(code);
  }
  exec_or_die(action.exec_argv);
}
