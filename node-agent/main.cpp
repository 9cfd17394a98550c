// ferry-agent: wiring only. Checkpoint, restore, the snapshot store and the
// runtime wrapper live in node-agent/<part>/, the Kubernetes loop in
// node-agent/controller/. `ferry-agent run` (the default) is what the
// DaemonSet runs: install ferry-runc on the node, report the node's
// abilities, then serve Migrations until SIGTERM. The node-local actions are
// also subcommands, which is how an operator debugs a node by hand:
//   ferry-agent checkpoint --container-id ID --migration-uid U --namespace N
//               --pod-name P --pod-uid X --container C [--tcp close|established]
//   ferry-agent thaw --container-id ID
//   ferry-agent kill-frozen --container-id ID
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>

#include "api/annotations.h"
#include "checkpoint/criu_features.h"
#include "checkpoint/engine.h"
#include "checkpoint/oci_runtime.h"
#include "checkpoint/source_snapshot.h"
#include "cli/flag_set.h"
#include "controller/agent_controller.h"
#include "install/node_setup.h"
#include "kube/config.h"
#include "obs/health_server.h"
#include "obs/kube_metrics.h"
#include "obs/metrics_server.h"
#include "process/stop_signals.h"
#include "process/subprocess.h"
#include "store/hashing.h"

namespace {

int report(const ferry::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "ferry-agent: %s\n", s.to_string().c_str());
  return 1;
}

int run_agent(const ferry::cli::FlagSet& flags, ferry::checkpoint::OciRuntime& runtime,
              ferry::store::DigestAlgorithm snapshot_digest) {
  const std::string& node = flags.get("node-name");
  if (node.empty()) {
    std::fprintf(stderr, "ferry-agent run: --node-name is required (downward API spec.nodeName)\n");
    return 2;
  }
  auto config = ferry::kube::load_config(flags.get("kubeconfig"));
  if (!config.ok()) return report(config.status());
  std::stop_source stop;
  ferry::process::stop_on_signals(stop);  // before any other thread starts

  auto features = ferry::checkpoint::detect_criu_features(flags.get("criu"));
  if (!features.ok()) return report(features.status().with_context("criu on this node"));
  std::string runtime_version = flags.get("runtime");
  if (auto v = ferry::process::run({flags.get("runtime"), "--version"}); v.ok()) {
    runtime_version = v->out.substr(0, v->out.find('\n'));
  }
  if (!flags.get("install-host-root").empty()) {
    auto installed =
        ferry::agent::install_ferry_runc({.host_root = flags.get("install-host-root"),
                                          .host_runtime = flags.get("host-runtime"),
                                          .snapshot_root = flags.get("snapshot-root")});
    if (!installed.ok()) return report(installed.status());
    std::fprintf(stderr, "ferry-agent: %s\n",
                 installed->empty() ? "ferry-runc already installed" : installed->c_str());
  }

  // The store's directory on the shared mount (root-only: snapshots hold
  // process memory). The mount itself must exist: creating it here would
  // hide a missing shared volume behind a node-local directory.
  {
    namespace fs = std::filesystem;
    const fs::path root = flags.get("snapshot-root");
    std::error_code ec;
    if (!fs::is_directory(root.parent_path(), ec)) {
      return report(ferry::Status(
          ferry::Code::kFailedPrecondition,
          "shared storage " + root.parent_path().string() + " is not mounted on this node",
          "SnapshotStoreMissing"));
    }
    if (fs::create_directory(root, ec)) fs::permissions(root, fs::perms::owner_all, ec);
  }

  auto registry = std::make_shared<prometheus::Registry>();
  ferry::obs::KubeMetrics kube_metrics(*registry);
  auto& checkpoints = prometheus::BuildCounter()
                          .Name("ferry_agent_checkpoints_total")
                          .Help("Checkpoints of a pod's containers on this node, by result.")
                          .Register(*registry);
  auto& phase_seconds =
      prometheus::BuildHistogram()
          .Name("ferry_agent_checkpoint_seconds")
          .Help(
              "Freeze, dump and publish time of checkpoints on this node, and the "
              "page transfer of PostCopy ones.")
          .Register(*registry);
  auto& page_transfers =
      prometheus::BuildCounter()
          .Name("ferry_agent_page_transfers_total")
          .Help("PostCopy page transfers this node served as the source, by result.")
          .Register(*registry);
  auto& bytes = prometheus::BuildCounter()
                    .Name("ferry_agent_checkpoint_bytes_total")
                    .Help("Bytes of snapshots published by this node.")
                    .Register(*registry);
  auto exposer = ferry::obs::serve_metrics(flags.get("metrics-bind-address"), registry);
  if (!exposer.ok()) return report(exposer.status());
  auto client = ferry::kube::Client::create(
      *config, {.user_agent = "ferry-agent/" + node, .on_request = kube_metrics.request_hook()});
  if (!client.ok()) return report(client.status());
  nlohmann::json node_report = ferry::agent::agent_report(*features, runtime_version);
  // Which agent process reported, so that on stopping it withdraws only
  // its own report (not its successor's).
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const std::string instance =
      std::string(host) + "/" + std::to_string(getpid()) + "/" +
      std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  node_report["instance"] = instance;
  if (auto st = ferry::agent::publish_report(**client, node, node_report); !st.ok()) {
    return report(st);
  }
  std::fprintf(stderr, "ferry-agent: serving node %s: %s\n", node.c_str(),
               node_report.dump().c_str());

  const std::vector<double> buckets = {0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60};
  ferry::agent::AgentController controller(
      **client, runtime,
      {.node = node,
       .snapshot_root = flags.get("snapshot-root"),
       .work_dir = flags.get("work-dir"),
       .records_dir = flags.get("records-dir"),
       .criu_version = features->criu_version,
       .runtime_version = runtime_version,
       .criu_network_lock = ferry::checkpoint::network_lock_method(*features),
       .snapshot_digest = snapshot_digest,
       .page_server_address = flags.get("page-server-address"),
       .criu_features = *features,
       .on_checkpoint =
           [&](const ferry::agent::CheckpointSample& s) {
             checkpoints.Add({{"result", s.ok ? "success" : "failure"}}).Increment();
             if (!s.ok) return;
             phase_seconds.Add({{"step", "freeze"}}, buckets).Observe(s.freeze_seconds);
             phase_seconds.Add({{"step", "dump"}}, buckets).Observe(s.dump_seconds);
             phase_seconds.Add({{"step", "publish"}}, buckets).Observe(s.publish_seconds);
             bytes.Add({}).Increment(static_cast<double>(s.bytes));
           },
       .on_page_transfer =
           [&](bool ok, double seconds) {
             page_transfers.Add({{"result", ok ? "success" : "failure"}}).Increment();
             if (ok) phase_seconds.Add({{"step", "page_transfer"}}, buckets).Observe(seconds);
           },
       .queue_metrics = kube_metrics.queue_hooks("agent")});
  std::unique_ptr<ferry::obs::HealthServer> health;
  if (!flags.get("health-bind-address").empty()) {
    auto h = ferry::obs::HealthServer::start(flags.get("health-bind-address"), [&] {
      return controller.synced()
                 ? ferry::Status()
                 : ferry::Status(ferry::Code::kUnavailable, "informer caches not synced yet");
    });
    if (!h.ok()) return report(h.status());
    health = std::move(h).value();
  }
  controller.run(stop.get_token(), 2);
  // Stopping (uninstall or restart): no new Migration should pick this node
  // until an agent reports again. Frozen containers stay on record.
  (void)ferry::agent::withdraw_report(**client, node, instance);
  return 0;
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
  flags.add_string("snapshot-digest", "blake3",
                   "The digest snapshot files are listed and verified with: blake3 (3.5x less "
                   "CPU per byte) or sha256 (where only FIPS-approved digests may be used). "
                   "Restores read either.");
  flags.add_string("runtime", "runc", "The OCI runtime binary (runc, or crun).");
  flags.add_string("runtime-root", "/run/containerd/runc/k8s.io",
                   "The runtime's state root, as containerd's runc shim uses it.");
  flags.add_string("work-dir", "/var/lib/ferry/work", "Node-local directory for CRIU logs.");
  flags.add_string("page-server-address", "",
                   "IPv4 address on which this node's CRIU serves a PostCopy source's pages to "
                   "the target node (the agent's pod IP, downward API status.podIP); empty: "
                   "PostCopy Migrations from this node are refused.");
  flags.add_string("metrics-bind-address", ":8090", "Address of the /metrics endpoint.");
  flags.add_string("health-bind-address", ":8091", "Address of /healthz and /readyz.");
  flags.add_string("records-dir", "/var/lib/ferry/records",
                   "Node-local directory of the agent's records of frozen containers.");
  flags.add_string("criu", "criu", "The CRIU binary the agent checks and the runtime uses.");
  flags.add_string("install-host-root", "",
                   "run: the host's / mounted here; ferry-runc and its config are installed "
                   "under it (empty: do not install).");
  flags.add_string("host-runtime", "/usr/local/sbin/runc",
                   "run: the real runtime's path on the host, which ferry-runc passes calls to.");
  flags.add_string("checkpoint-cgroup", "ferry-checkpoint",
                   "run/checkpoint: the cgroup, below the root of each cgroup hierarchy, in which "
                   "dumps run (one child per container), so that a dump outlives a restart of "
                   "the agent's pod; empty: in the agent's own cgroup.");
  flags.add_string("checkpoint-cgroup-namespace", "/proc/1/ns/cgroup",
                   "run/checkpoint: the cgroup namespace a dump enters to join its cgroup (with "
                   "hostPID, the node's); empty: the agent's.");
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
  const auto snapshot_digest = ferry::store::parse_digest_algorithm(flags.get("snapshot-digest"));
  if (!snapshot_digest) {
    std::fprintf(stderr, "ferry-agent: --snapshot-digest must be blake3 or sha256, not '%s'\n",
                 flags.get("snapshot-digest").c_str());
    return 2;
  }

  const auto& args = flags.positional();
  std::string_view command = args.empty() ? "run" : std::string_view(args[0]);
  ferry::checkpoint::RuncCli runtime(flags.get("runtime"), flags.get("runtime-root"));
  if ((command == "run" || command == "checkpoint") && !flags.get("checkpoint-cgroup").empty()) {
    auto cgroups = ferry::checkpoint::CheckpointCgroups::discover(
        flags.get("checkpoint-cgroup"), flags.get("checkpoint-cgroup-namespace"));
    if (!cgroups.ok()) {
      return report(
          cgroups.status().with_context("--checkpoint-cgroup (empty: run dumps in the "
                                        "agent's own cgroup)"));
    }
    if (command == "run") {
      std::string dirs;
      for (const auto& d : cgroups->dirs()) dirs += (dirs.empty() ? "" : ", ") + d;
      std::fprintf(stderr, "ferry-agent: dumps run in %s\n", dirs.c_str());
    }
    runtime.run_checkpoints_in(std::move(cgroups).value());
  }
  const std::string id = flags.get("container-id");
  if (command == "withdraw-reports") {
    // Helm's pre-delete hook: the agents' Node reports go before the
    // uninstall removes the RBAC the agents would need to withdraw them.
    auto config = ferry::kube::load_config(flags.get("kubeconfig"));
    if (!config.ok()) return report(config.status());
    auto client = ferry::kube::Client::create(*config, {.user_agent = "ferry-agent/uninstall"});
    if (!client.ok()) return report(client.status());
    auto nodes = (*client)->list_all(ferry::kube::resources::kNodes, "", {});
    if (!nodes.ok()) return report(nodes.status());
    for (const auto& n : (*nodes)["items"]) {
      if (!n.contains("metadata") || !n["metadata"].contains("annotations") ||
          !n["metadata"]["annotations"].contains(ferry::api::kAgentReportAnnotation)) {
        continue;
      }
      const std::string name = n["metadata"].value("name", "");
      if (auto st = ferry::agent::publish_report(**client, name, nullptr); !st.ok()) {
        return report(st);
      }
      std::printf("withdrew the agent report of node %s\n", name.c_str());
    }
    return 0;
  }
  if (command != "run" && id.empty()) {
    std::fprintf(stderr, "ferry-agent %s: --container-id is required\n", args[0].c_str());
    return 2;
  }
  if (command == "thaw") return report(ferry::checkpoint::CheckpointEngine(runtime).thaw(id));
  if (command == "kill-frozen") {
    return report(ferry::checkpoint::CheckpointEngine(runtime).kill_frozen(id));
  }
  if (command == "checkpoint") {
    auto features = ferry::checkpoint::detect_criu_features(flags.get("criu"));
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
         .network_lock = features.ok() ? ferry::checkpoint::network_lock_method(*features) : "",
         .work_dir = flags.get("work-dir") + "/" + id,
         .criu_version = features.ok() ? features->criu_version : "",
         .digest_algorithm = *snapshot_digest});
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
    std::fprintf(stderr,
                 "ferry-agent: unknown command %s (run, checkpoint, thaw, kill-frozen, "
                 "withdraw-reports)\n",
                 args[0].c_str());
    return 2;
  }
  return run_agent(flags, runtime, *snapshot_digest);
}
