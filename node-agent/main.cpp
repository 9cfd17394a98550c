// ferry-agent: wiring only. Checkpoint, restore, the snapshot store and the
// runtime wrapper live in node-agent/<part>/. Until the Kubernetes loop is
// wired (issue #6), the agent's node-local actions are available as
// subcommands, which is also how an operator debugs a node by hand:
//   ferry-agent checkpoint --container-id ID --migration-uid U --namespace N
//               --pod-name P --pod-uid X --container C [--tcp close|established]
//   ferry-agent thaw --container-id ID
//   ferry-agent kill-frozen --container-id ID
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>

#include "checkpoint/criu_features.h"
#include "checkpoint/engine.h"
#include "checkpoint/oci_runtime.h"
#include "checkpoint/source_snapshot.h"
#include "cli/flag_set.h"

namespace {

int report(const ferry::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "ferry-agent: %s\n", s.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::cli::FlagSet flags("ferry-agent",
                            "node agent: checkpoints and restores containers with CRIU and owns "
                            "the snapshot store");
  flags.add_string("node-name", "", "Name of the Node this agent serves (downward API).");
  flags.add_string("kubeconfig", "", "Path to a kubeconfig; in-cluster config when empty.");
  flags.add_string("snapshot-root", "/var/lib/ferry-shared/snapshots",
                   "Shared-storage directory holding published snapshots.");
  flags.add_string("runtime", "runc", "The OCI runtime binary (runc, or crun).");
  flags.add_string("runtime-root", "/run/containerd/runc/k8s.io",
                   "The runtime's state root, as containerd's runc shim uses it.");
  flags.add_string("work-dir", "/var/lib/ferry/work", "Node-local directory for CRIU logs.");
  flags.add_string("metrics-bind-address", ":8090", "Address of the /metrics endpoint.");
  flags.add_string("container-id", "", "checkpoint/thaw/kill-frozen: the container.");
  flags.add_string("migration-uid", "", "checkpoint: the Migration's UID.");
  flags.add_string("namespace", "", "checkpoint: namespace of the pod to restore into.");
  flags.add_string("pod-name", "", "checkpoint: name of the pod to restore into.");
  flags.add_string("pod-uid", "", "checkpoint: UID of the pod to restore into.");
  flags.add_string("container", "", "checkpoint: the container's name in the pod.");
  flags.add_string("tcp", "close",
                   "checkpoint: established TCP connections are restored closed (close; the "
                   "target has a new IP) or as they were (established; same IP only).");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;

  const auto& args = flags.positional();
  std::string_view command = args.empty() ? "run" : std::string_view(args[0]);
  ferry::checkpoint::RuncCli runtime(flags.get("runtime"), flags.get("runtime-root"));
  const std::string id = flags.get("container-id");
  if (command != "run" && id.empty()) {
    std::fprintf(stderr, "ferry-agent %s: --container-id is required\n", args[0].c_str());
    return 2;
  }
  if (command == "thaw") return report(ferry::checkpoint::CheckpointEngine(runtime).thaw(id));
  if (command == "kill-frozen") {
    return report(ferry::checkpoint::CheckpointEngine(runtime).kill_frozen(id));
  }
  if (command == "checkpoint") {
    auto features = ferry::checkpoint::detect_criu_features("criu");
    auto r = ferry::checkpoint::snapshot_container(
        runtime,
        {.container_id = id,
         .snapshot_root = flags.get("snapshot-root"),
         .binding = {.namespace_name = flags.get("namespace"),
                     .pod_name = flags.get("pod-name"),
                     .pod_uid = flags.get("pod-uid"),
                     .container_name = flags.get("container"),
                     .migration_uid = flags.get("migration-uid")},
         .tcp = flags.get("tcp") == "established" ? ferry::checkpoint::TcpMode::kEstablished
                                                  : ferry::checkpoint::TcpMode::kClose,
         .work_dir = flags.get("work-dir") + "/" + id,
         .criu_version = features.ok() ? features->criu_version : ""});
    if (!r.ok()) return report(r.status());
    nlohmann::json out = {{"snapshot", r->snapshot_dir},
                          {"bytes", r->bytes},
                          {"freezeSeconds", r->dump.freeze.count()},
                          {"dumpSeconds", r->dump.dump.count()},
                          {"publishSeconds", r->publish.count()}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  if (command != "run") {
    std::fprintf(stderr, "ferry-agent: unknown command %s (run, checkpoint, thaw, kill-frozen)\n",
                 args[0].c_str());
    return 2;
  }
  std::fputs(
      "ferry-agent: the Kubernetes loop is not wired up yet (issue #6); use the "
      "checkpoint/thaw/kill-frozen subcommands\n",
      stderr);
  return 1;
}
