// ferry-testenv: the integration-test control plane for scripts. Starts etcd
// and kube-apiserver (see control_plane.h), prints `kubeconfig=<path>` once
// ready, and tears everything down on SIGINT/SIGTERM.
#include <signal.h>

#include <cstdio>

#include "cli/flag_set.h"
#include "control_plane.h"

int main(int argc, char** argv) {
  ferry::cli::FlagSet flags("ferry-testenv", "runs a real etcd + kube-apiserver for tests");
  flags.add_string("bin-dir", "", "Directory of the pinned binaries (default $FERRY_TOOL_BIN).");
  flags.add_string("work-dir", "", "Directory for data, PKI and logs (default: a temp dir).");
  flags.add_bool("no-watch-cache", "Serve watches from etcd directly.");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, nullptr);

  auto cp = ferry::testing::ControlPlane::start({.bin_dir = flags.get("bin-dir"),
                                                 .watch_cache = !flags.get_bool("no-watch-cache"),
                                                 .work_dir = flags.get("work-dir")});
  if (!cp.ok()) {
    std::fprintf(stderr, "ferry-testenv: %s\n", cp.status().to_string().c_str());
    return 1;
  }
  std::printf("kubeconfig=%s\nserver=%s\n", (*cp)->kubeconfig_path().c_str(),
              (*cp)->server().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
