// What the agent does to its node when it starts (DESIGN.md §1: "binary
// installed on each node by the agent"), and undoes when it is uninstalled:
//   - installs ferry-runc into the host's /opt/ferry/bin (atomic replace,
//     so a shim never execs a half-written binary) and writes its
//     configuration (/etc/ferry/ferry-runc.json), idempotently;
//   - reports what the node can do on the Node object (annotation
//     ferry.dev/agent: CRIU version and features, kernel, architecture,
//     runtime), which the operator's placement reads.
// Registering the `ferry` handler with containerd needs containerd's
// configuration changed and containerd restarted, which a node's owner
// must decide (deploy/README.md shows the stanza); the local cluster's node
// image has it (hack/cluster/node/containerd.toml). The agent checks it is
// there and says so clearly when it is not.
#pragma once

#include <string>

#include "checkpoint/criu_features.h"
#include "kube/client.h"
#include "status/status.h"

namespace ferry::agent {

struct InstallOptions {
  std::string host_root = "/host";                       // where the host's / is mounted
  std::string ferry_runc = "/opt/ferry/bin/ferry-runc";  // in the agent image
  std::string host_runtime = "/usr/local/sbin/runc";     // the real runtime, on the host
  std::string snapshot_root = "/var/lib/ferry-shared/snapshots";
  std::string containerd_config = "/etc/containerd/config.toml";  // host path
  std::string containerd_dropins = "/etc/containerd/conf.d";      // host path
};

// Installs ferry-runc and its config under options.host_root; returns a
// line describing what changed ("" when all was in place already).
Result<std::string> install_ferry_runc(const InstallOptions& options);

// The ferry.dev/agent annotation's value.
nlohmann::json agent_report(const checkpoint::CriuFeatures& features,
                            const std::string& runtime_version);

// Removes the report from `node` if it is still the one of agent
// `instance` (the report's "instance"): a restarted agent's replacement may
// have published its own already, which must stay.
Status withdraw_report(kube::Client& client, const std::string& node, const std::string& instance);

// Sets (or, with an empty report, removes) the annotation on `node`.
Status publish_report(kube::Client& client, const std::string& node, const nlohmann::json& report);

}  // namespace ferry::agent
