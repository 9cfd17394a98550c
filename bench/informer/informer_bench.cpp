// bench-informer: how fast lib/kube's informer syncs a large resource and
// follows its watch, next to kubectl doing the same job in the same run on
// the same real control plane (etcd + kube-apiserver from the pinned
// toolchain). Prints one line per measurement; the last line is the sync
// time ratio informer / `kubectl get -o json` for the configured count.
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "control_plane.h"
#include "kube/informer.h"
#include "kube_client.h"

namespace {

using namespace std::chrono_literals;
using ferry::kube::json;
namespace res = ferry::kube::resources;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field) + 1));
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  int count = argc > 1 ? std::atoi(argv[1]) : 10000;
  auto cp_result = ferry::testing::ControlPlane::start();
  if (!cp_result.ok()) {
    std::fprintf(stderr, "control plane: %s\n", cp_result.status().to_string().c_str());
    return 1;
  }
  auto& cp = **cp_result;
  auto client = ferry::testing::client_for(cp);
  if (!client) return 1;
  (void)client->create(res::kNamespaces, "", {{"metadata", {{"name", "bench"}}}});

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> writers;
  writers.reserve(4);
  std::atomic<int> failed{0};
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      auto c = ferry::testing::client_for(cp);
      for (int i = t; i < count; i += 4) {
        json cm = {{"apiVersion", "v1"},
                   {"kind", "ConfigMap"},
                   {"metadata", {{"name", "cm-" + std::to_string(i)}}},
                   {"data", {{"payload", std::string(256, 'x')}}}};
        if (!c->create(res::kConfigMaps, "bench", cm).ok()) ++failed;
      }
    });
  }
  for (auto& w : writers) w.join();
  if (failed > 0) {
    std::fprintf(stderr, "%d creates failed\n", failed.load());
    return 1;
  }
  std::printf("setup: %d configmaps created in %.1f s\n", count, seconds_since(t0));

  // kubectl get -o json: the baseline.
  auto k0 = std::chrono::steady_clock::now();
  auto listed = cp.kubectl({"get", "configmaps", "-n", "bench", "-o", "json"});
  double kubectl_s = seconds_since(k0);
  rusage children{};
  getrusage(RUSAGE_CHILDREN, &children);
  if (!listed.ok() || listed->exit_code != 0) return 1;
  auto kubectl_items = json::parse(listed->out)["items"].size();

  // Informer initial sync.
  long rss_before = status_kb("VmRSS:");
  std::ofstream("/proc/self/clear_refs") << "5";  // reset VmHWM to the current RSS
  ferry::kube::Informer informer(*client, res::kConfigMaps, {.ns = "bench"});
  std::atomic<int64_t> events{0};
  informer.add_handlers({.on_add = [&](auto&) { ++events; },
                         .on_update = [&](auto&, auto&) { ++events; },
                         .on_delete = [&](auto&) { ++events; }});
  auto i0 = std::chrono::steady_clock::now();
  std::jthread run([&](std::stop_token stop) { informer.run(stop); });
  informer.wait_for_sync({}, 300s);
  double informer_s = seconds_since(i0);
  long hwm = status_kb("VmHWM:");

  // Watch throughput: 4 writers update every object; time until the
  // informer has seen every update.
  events = 0;
  auto w0 = std::chrono::steady_clock::now();
  writers.clear();
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      auto c = ferry::testing::client_for(cp);
      for (int i = t; i < count; i += 4) {
        (void)c->patch(res::kConfigMaps, "bench", "cm-" + std::to_string(i),
                       ferry::kube::PatchType::kMerge, {{"data", {{"v", "1"}}}});
      }
    });
  }
  for (auto& w : writers) w.join();
  double writes_s = seconds_since(w0);
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (events.load() < count && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  double watch_s = seconds_since(w0);
  run.request_stop();

  std::printf("kubectl get -o json: %zu objects in %.2f s, peak RSS %ld MiB\n", kubectl_items,
              kubectl_s, children.ru_maxrss / 1024);
  std::printf("informer initial sync: %zu objects in %.2f s, peak RSS growth %ld MiB\n",
              informer.store().size(), informer_s, (hwm - rss_before) / 1024);
  std::printf(
      "watch: %lld update events in %.2f s (%.0f events/s; the API server took %.2f s "
      "to accept the writes)\n",
      static_cast<long long>(events.load()), watch_s, events.load() / watch_s, writes_s);
  std::printf("informer sync / kubectl get -o json for %d objects: %.2f s / %.2f s = %.2f\n", count,
              informer_s, kubectl_s, informer_s / kubectl_s);
  return informer.store().size() == static_cast<size_t>(count) ? 0 : 1;
}
