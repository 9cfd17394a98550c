// ferry-operator: wiring only. Controllers live in operator/<controller>/,
// the Kubernetes machinery in lib/kube, metrics in lib/obs.
#include <prometheus/registry.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <memory>
#include <thread>

#include "admission/pod_admission.h"
#include "admission/webhook_certs.h"
#include "cli/flag_set.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"
#include "kube/leader_election.h"
#include "migration/controller.h"
#include "obs/health_server.h"
#include "obs/kube_metrics.h"
#include "obs/metrics_server.h"
#include "obs/migration_metrics.h"
#include "process/stop_signals.h"
#include "webhook/webhook_server.h"

namespace {

std::stop_source g_stop;

// A whole number of seconds >= 1, or exit with a clear error ("7.776e+06",
// as a template may render a large number, is not silently 7).
std::chrono::seconds seconds_flag(const ferry::cli::FlagSet& flags, const char* name) {
  const std::string& text = flags.get(name);
  long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1) {
    std::fprintf(stderr, "ferry-operator: --%s=%s: want a whole number of seconds >= 1\n", name,
                 text.c_str());
    std::exit(2);
  }
  return std::chrono::seconds(value);
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
  flags.add_string("health-bind-address", "0.0.0.0:8081",
                   "Address of /healthz and /readyz; empty disables them.");
  flags.add_string("workers", "2", "Concurrent Migration reconciles.");
  flags.add_string("max-in-flight", "4",
                   "Migrations past admission at once, cluster-wide; the excess waits "
                   "(condition Queued).");
  flags.add_string("max-in-flight-per-node", "2",
                   "Migrations at once with a given node as source or target.");
  flags.add_string("default-completion-seconds", "600",
                   "completionSeconds of Migrations that set none and match no MigrationPolicy.");
  flags.add_string("default-progress-seconds", "120",
                   "progressSeconds of Migrations that set none and match no MigrationPolicy.");
  flags.add_string("namespace",
                   std::getenv("POD_NAMESPACE") ? std::getenv("POD_NAMESPACE") : "ferry-system",
                   "Namespace the operator runs in (webhook Secret and Service).");
  flags.add_string("webhook-bind-address", "",
                   "Address of the HTTPS admission webhooks (\":8443\"); empty disables them.");
  flags.add_string("webhook-service", "ferry-webhook",
                   "Service in front of the webhooks (the serving certificate's DNS names).");
  flags.add_string("webhook-secret", "ferry-webhook-tls",
                   "Secret holding the webhooks' CA and serving certificate (created if absent).");
  flags.add_string("webhook-configuration", "ferry-webhook",
                   "MutatingWebhookConfiguration whose caBundle the operator keeps current.");
  flags.add_string("webhook-cert-validity-seconds", "7776000",
                   "Lifetime of the serving certificate; renewed with a third of it left.");
  flags.add_string("webhook-ca-validity-seconds", "157680000",
                   "Lifetime of the webhook CA; renewed with a third of it left.");
  flags.add_string("webhook-cert-check-seconds", "10",
                   "How often each replica checks, renews and reloads the webhook certificate.");
  flags.add_string("operator-user", "system:serviceaccount:ferry-system:ferry-operator",
                   "This operator's API user: the only one the webhook lets create pods with "
                   "the restore annotation.");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;
  const ferry::operator_::DefaultTimeouts default_timeouts{
      .completion_seconds = seconds_flag(flags, "default-completion-seconds").count(),
      .progress_seconds = seconds_flag(flags, "default-progress-seconds").count()};

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

  // The webhooks run in every replica (the Service picks any), with their
  // own cache of Migrations: a standby must answer as well as the leader.
  // (Declared in the order they may be destroyed: threads last.)
  std::unique_ptr<ferry::kube::Informer> webhook_migrations;
  std::unique_ptr<ferry::operator_::PodAdmission> pod_admission;
  std::shared_ptr<ferry::webhook::ServingCertificate> serving;
  std::unique_ptr<ferry::webhook::WebhookServer> webhook_server;
  std::jthread webhooks_thread;
  std::jthread cert_thread;
  if (!flags.get("webhook-bind-address").empty()) {
    webhook_migrations =
        std::make_unique<ferry::kube::Informer>(**client, ferry::operator_::kMigrations);
    auto* cache = webhook_migrations.get();
    ferry::kube::Client* api = client->get();
    pod_admission =
        std::make_unique<ferry::operator_::PodAdmission>(ferry::operator_::PodAdmissionOptions{
            .operator_user = flags.get("operator-user"),
            .cached_migrations =
                [cache](const std::string& ns) {
                  std::vector<ferry::api::Migration> out;
                  for (const auto& o : cache->store().list()) {
                    if (o->value(nlohmann::json::json_pointer("/metadata/namespace"), "") != ns) {
                      continue;
                    }
                    if (auto m = ferry::api::migration_from_json(*o); m.ok()) {
                      out.push_back(std::move(m).value());
                    }
                  }
                  return out;
                },
            .fresh_migration = [api](const std::string& ns, const std::string& name)
                -> ferry::Result<ferry::api::Migration> {
              auto o = api->get(ferry::operator_::kMigrations, ns, name);
              if (!o.ok()) return o.status();
              return ferry::api::migration_from_json(*o);
            },
            .on_decision =
                [&migration_metrics](const std::string& webhook, const std::string& decision) {
                  migration_metrics.observe_webhook(webhook, decision);
                }});
    serving = std::make_shared<ferry::webhook::ServingCertificate>();
    auto* admission = pod_admission.get();
    auto server = ferry::webhook::WebhookServer::start(
        flags.get("webhook-bind-address"), serving,
        {{"/guard-pods", [admission](const nlohmann::json& r) { return admission->guard(r); }},
         {"/steer-pods", [admission](const nlohmann::json& r) { return admission->steer(r); }}});
    if (!server.ok()) {
      std::fprintf(stderr, "ferry-operator: %s\n", server.status().message().c_str());
      return 1;
    }
    webhook_server = std::move(server).value();
    webhooks_thread = std::jthread([cache](std::stop_token s) { cache->run(s); });
    cert_thread =
        std::jthread([api, serving, interval = seconds_flag(flags, "webhook-cert-check-seconds"),
                      options = ferry::operator_::WebhookCertOptions{
                          .ns = flags.get("namespace"),
                          .secret = flags.get("webhook-secret"),
                          .service = flags.get("webhook-service"),
                          .webhook_configuration = flags.get("webhook-configuration"),
                          .ca_validity = seconds_flag(flags, "webhook-ca-validity-seconds"),
                          .cert_validity = seconds_flag(
                              flags, "webhook-cert-validity-seconds")}](std::stop_token s) {
          ferry::operator_::WebhookCertificates certs(*api, serving, options);
          certs.run(s, interval);
        });
  }

  const std::string identity = default_identity();
  const int workers = std::max(1, std::atoi(flags.get("workers").c_str()));
  // Ready once this replica's caches are synced, or while it stands by as a
  // non-leader (it is healthy and can take over).
  std::atomic<const ferry::operator_::MigrationController*> leading{nullptr};
  std::unique_ptr<ferry::obs::HealthServer> health;
  if (!flags.get("health-bind-address").empty()) {
    auto h = ferry::obs::HealthServer::start(flags.get("health-bind-address"), [&] {
      if (serving && !serving->loaded()) {
        return ferry::Status(ferry::Code::kUnavailable, "no webhook serving certificate yet");
      }
      if (webhook_migrations &&
          !webhook_migrations->wait_for_sync({}, std::chrono::milliseconds(0))) {
        return ferry::Status(ferry::Code::kUnavailable, "webhook cache not synced yet");
      }
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
        .default_timeouts = default_timeouts,
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
