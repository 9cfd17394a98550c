// ferry-runc: the OCI runtime wrapper registered as the `ferry` RuntimeClass
// handler. Wiring only; the decisions are in wrapper.cpp (DESIGN.md §2).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>
#include <vector>

#include "cli/build_info.h"
#include "runtime/restore_source.h"
#include "runtime/wrapper.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
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
  std::vector<char*> c_argv;
  for (auto& s : action.exec_argv) c_argv.push_back(s.data());
  c_argv.push_back(nullptr);
  execvp(c_argv[0], c_argv.data());
  std::perror(("ferry-runc: cannot run " + action.exec_argv[0]).c_str());
  return 127;
}
