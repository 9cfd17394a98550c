// ferry-operator: wiring only. Controllers live in operator/<controller>/,
// the Kubernetes machinery in lib/kube, metrics in lib/obs.
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <thread>

#include "cli/flag_set.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/leader_election.h"
#include "migration/controller.h"
#include "obs/kube_metrics.h"

namespace {

std::stop_source g_stop;

// SIGTERM/SIGINT are blocked in every thread and taken by one sigwait
// thread, so stopping runs as ordinary code rather than in a signal handler.
std::thread stop_on_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    g_stop.request_stop();
  });
}

std::string default_identity() {
  char host[256] = "ferry-operator";
  gethostname(host, sizeof host - 1);
  return host;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::cli::FlagSet flags("ferry-operator",
                            "drives Migrations: picks targets, runs the state machine, serves "
                            "the admission webhooks");
  flags.add_string("kubeconfig", "", "Path to a kubeconfig; in-cluster config when empty.");
  flags.add_string("metrics-bind-address", "0.0.0.0:8080",
                   "Address of the /metrics endpoint; empty disables it.");
  flags.add_bool("leader-elect", "Elect a leader through a coordination.k8s.io Lease.");
  flags.add_string("leader-election-namespace", "ferry-system", "Namespace of the Lease.");
  flags.add_string("workers", "2", "Concurrent Migration reconciles.");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;

  auto config = ferry::kube::load_config(flags.get("kubeconfig"));
  if (!config.ok()) {
    std::fprintf(stderr, "ferry-operator: %s\n", config.status().message().c_str());
    return 1;
  }
  std::thread signals = stop_on_signals();  // before any other thread starts
  signals.detach();
  auto registry = std::make_shared<prometheus::Registry>();
  ferry::obs::KubeMetrics kube_metrics(*registry);
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!flags.get("metrics-bind-address").empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(flags.get("metrics-bind-address"));
      exposer->RegisterCollectable(registry);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ferry-operator: cannot serve metrics on %s: %s\n",
                   flags.get("metrics-bind-address").c_str(), e.what());
      return 1;
    }
  }
  auto client = ferry::kube::Client::create(
      *config, {.user_agent = "ferry-operator", .on_request = kube_metrics.request_hook()});
  if (!client.ok()) {
    std::fprintf(stderr, "ferry-operator: %s\n", client.status().message().c_str());
    return 1;
  }

  const std::string identity = default_identity();
  const int workers = std::max(1, std::atoi(flags.get("workers").c_str()));
  auto lead = [&](std::stop_token stop) {
    ferry::operator_::MigrationController controller(**client, identity);
    controller.run(stop, workers);
  };
  if (!flags.get_bool("leader-elect")) {
    lead(g_stop.get_token());
    return 0;
  }
  ferry::kube::LeaderElector elector(
      **client, {.lease_namespace = flags.get("leader-election-namespace"),
                 .lease_name = "ferry-operator",
                 .identity = identity,
                 .on_started_leading = lead,
                 .on_new_leader = [](const std::string& who) {
                   std::fprintf(stderr, "ferry-operator: leader is %s\n", who.c_str());
                 }});
  // Campaign again after a lost lease, until asked to stop.
  while (!g_stop.stop_requested()) elector.run(g_stop.get_token());
  return 0;
}
