// ferry-lease-contender: one replica contending for a Lease through
// lib/kube's LeaderElector, for the multi-process leader-election tests.
// It appends what it does to --events, one line each, stamped with the
// system-wide monotonic clock so lines from several processes compare:
//   start <ns>        became leader, work begins
//   work <ns> <renew> doing leader-only work; <renew> = last successful renew
//   stop <ns>         work stopped (leadership lost or shutting down)
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "cli/flag_set.h"
#include "kube/client.h"
#include "kube/leader_election.h"

namespace {

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::stop_source g_stop;

}  // namespace

int main(int argc, char** argv) {
  ferry::cli::FlagSet flags("ferry-lease-contender", "contends for a Lease (test tool)");
  flags.add_string("kubeconfig", "", "Kubeconfig of the test control plane.");
  flags.add_string("identity", "", "This replica's identity.");
  flags.add_string("lease", "ferry-test", "Lease name (namespace default).");
  flags.add_string("events", "", "File to append events to.");
  flags.add_string("lease-duration-ms", "4000", "Lease duration.");
  flags.add_string("renew-deadline-ms", "3000", "Renew deadline.");
  flags.add_string("retry-period-ms", "500", "Retry period.");
  if (auto code = ferry::cli::parse_or_exit(flags, argc, argv)) return *code;

  auto config = ferry::kube::load_kubeconfig(flags.get("kubeconfig"));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().to_string().c_str());
    return 1;
  }
  // Requests must give up well within the renew deadline.
  auto client = ferry::kube::Client::create(
      *config, {.max_retries = 0, .request_timeout = std::chrono::milliseconds(1000)});
  if (!client.ok()) return 1;

  std::ofstream events(flags.get("events"), std::ios::app);
  std::mutex events_mu;
  auto emit = [&](const std::string& line) {
    std::lock_guard lock(events_mu);
    events << line << std::endl;
  };
  ferry::kube::LeaderElector* elector_ptr = nullptr;
  ferry::kube::LeaderElectionConfig le{
      .lease_namespace = "default",
      .lease_name = flags.get("lease"),
      .identity = flags.get("identity"),
      .lease_duration = std::chrono::milliseconds(std::stoll(flags.get("lease-duration-ms"))),
      .renew_deadline = std::chrono::milliseconds(std::stoll(flags.get("renew-deadline-ms"))),
      .retry_period = std::chrono::milliseconds(std::stoll(flags.get("retry-period-ms"))),
      .on_started_leading =
          [&](std::stop_token stop) {
            emit("start " + std::to_string(mono_ns()));
            while (!stop.stop_requested()) {
              emit("work " + std::to_string(mono_ns()) + " " +
                   std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      elector_ptr->last_renew().time_since_epoch())
                                      .count()));
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            emit("stop " + std::to_string(mono_ns()));
          },
  };
  ferry::kube::LeaderElector elector(**client, le);
  elector_ptr = &elector;
  signal(SIGTERM, [](int) { g_stop.request_stop(); });
  while (!g_stop.stop_requested()) elector.run(g_stop.get_token());
  return 0;
}
