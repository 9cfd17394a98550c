// ferry-operator: wiring only. Controllers live in operator/<controller>/,
// the Kubernetes machinery in lib/kube, metrics in lib/obs.
#include <prometheus/registry.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/flag_set.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/leader_election.h"
#include "migration/controller.h"
#include "obs/health_server.h"
#include "obs/kube_metrics.h"
#include "obs/metrics_server.h"
#include "obs/migration_metrics.h"
#include "process/stop_signals.h"

namespace {

std::stop_source g_stop;

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
  flags.add_string("health-bind-address", "0.0.0.0:8081",
                   "Address of /healthz and /readyz; empty disables them.");
  flags.add_string("workers", "2", "Concurrent Migration reconciles.");
  flags.add_string("max-in-flight", "4",
                   "Migrations past admission at once, cluster-wide; the excess waits "
                   "(condition Queued).");
  flags.add_string("max-in-flight-per-node", "2",
                   "Migrations at once with a given node as source or target.");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;

  auto config = ferry::kube::load_config(flags.get("kubeconfig"));
  if (!config.ok()) {
    std::fprintf(stderr, "ferry-operator: %s\n", config.status().message().c_str());
    return 1;
  }
  ferry::process::stop_on_signals(g_stop);  // before any other thread starts
  auto registry = std::make_shared<prometheus::Registry>();
  ferry::obs::KubeMetrics kube_metrics(*registry);
  ferry::obs::MigrationMetrics migration_metrics(*registry);
  auto exposer = ferry::obs::serve_metrics(flags.get("metrics-bind-address"), registry);
  if (!exposer.ok()) {
    std::fprintf(stderr, "ferry-operator: %s\n", exposer.status().message().c_str());
    return 1;
  }
  auto client = ferry::kube::Client::create(
      *config, {.user_agent = "ferry-operator", .on_request = kube_metrics.request_hook()});
  if (!client.ok()) {
    std::fprintf(stderr, "ferry-operator: %s\n", client.status().message().c_str());
    return 1;
  }

  const std::string identity = default_identity();
  const int workers = std::max(1, std::atoi(flags.get("workers").c_str()));
  // Ready once this replica's caches are synced, or while it stands by as a
  // non-leader (it is healthy and can take over).
  std::atomic<const ferry::operator_::MigrationController*> leading{nullptr};
  std::unique_ptr<ferry::obs::HealthServer> health;
  if (!flags.get("health-bind-address").empty()) {
    auto h = ferry::obs::HealthServer::start(flags.get("health-bind-address"), [&] {
      const auto* c = leading.load();
      return c == nullptr || c->synced()
                 ? ferry::Status()
                 : ferry::Status(ferry::Code::kUnavailable, "informer caches not synced yet");
    });
    if (!h.ok()) {
      std::fprintf(stderr, "ferry-operator: %s\n", h.status().message().c_str());
      return 1;
    }
    health = std::move(h).value();
  }
  auto lead = [&](std::stop_token stop) {
    ferry::operator_::ControllerOptions options{
        .instance = identity,
        .max_in_flight = std::max(1, std::atoi(flags.get("max-in-flight").c_str())),
        .max_in_flight_per_node =
            std::max(1, std::atoi(flags.get("max-in-flight-per-node").c_str())),
        .on_final =
            [&](const ferry::api::Migration& m, const ferry::api::MigrationStatus& s) {
              migration_metrics.observe_final(s, s.effective ? s.effective->mode : m.spec.mode);
            },
        .on_reconcile =
            [&](bool ok, std::chrono::duration<double> d) {
              migration_metrics.observe_reconcile(ok, d);
            },
        .queue_metrics = kube_metrics.queue_hooks("migrations")};
    ferry::operator_::MigrationController controller(**client, std::move(options));
    leading = &controller;
    std::jthread gauge([&](std::stop_token s) {
      while (!s.stop_requested()) {
        if (controller.synced()) migration_metrics.set_phase_counts(controller.phase_counts());
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    });
    controller.run(stop, workers);
    gauge.request_stop();
    gauge.join();
    leading = nullptr;
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
