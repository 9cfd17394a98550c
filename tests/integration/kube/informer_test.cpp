// lib/kube Informer against a real kube-apiserver: after bulk creation, an
// API server restart mid-watch, and an etcd compaction that expires the
// watch's resourceVersion (410 Gone), the cache must equal the server's list
// and the final state each handler saw must equal it too: nothing missed,
// nothing duplicated.
#include "kube/informer.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <thread>

#include "control_plane.h"
#include "kube_client.h"

namespace ferry::testing {
namespace {

using kube::json;
using kube::ObjectPtr;
namespace res = kube::resources;
using namespace std::chrono_literals;

// Replays handler callbacks into key -> resourceVersion: what a controller
// driven by these events would believe.
class HandlerView {
 public:
  kube::EventHandlers handlers() {
    return {.on_add = [this](const ObjectPtr& o) { set(*o, "add"); },
            .on_update = [this](const ObjectPtr&, const ObjectPtr& o) { set(*o, "update"); },
            .on_delete =
                [this](const ObjectPtr& o) {
                  std::lock_guard lock(mu_);
                  if (state_.erase(kube::object_key(*o)) == 0) ++bad_deletes_;
                }};
  }
  std::map<std::string, std::string> state() {
    std::lock_guard lock(mu_);
    return state_;
  }
  int duplicate_adds() {
    std::lock_guard lock(mu_);
    return duplicate_adds_;
  }
  int bad_deletes() {
    std::lock_guard lock(mu_);
    return bad_deletes_;
  }

 private:
  void set(const json& o, const char* how) {
    std::lock_guard lock(mu_);
    auto [it, inserted] = state_.insert_or_assign(
        kube::object_key(o), o["metadata"]["resourceVersion"].get<std::string>());
    if (std::string(how) == "add" && !inserted) ++duplicate_adds_;
  }
  std::mutex mu_;
  std::map<std::string, std::string> state_;
  int duplicate_adds_ = 0;
  int bad_deletes_ = 0;
};

std::map<std::string, std::string> server_state(kube::Client& client, const std::string& ns) {
  auto list = client.list_all(res::kConfigMaps, ns, {.limit = 500});
  EXPECT_TRUE(list.ok()) << list.status().to_string();
  std::map<std::string, std::string> out;
  if (!list.ok()) return out;
  for (const auto& item : (*list)["items"]) {
    out[kube::object_key(item)] = item["metadata"]["resourceVersion"];
  }
  return out;
}

std::map<std::string, std::string> cache_state(kube::Informer& informer) {
  std::map<std::string, std::string> out;
  for (const auto& o : informer.store().list()) {
    out[kube::object_key(*o)] = (*o)["metadata"]["resourceVersion"];
  }
  return out;
}

// Waits until cache and handler view both equal the server's list.
void expect_converges(kube::Client& client, kube::Informer& informer, HandlerView& view,
                      const std::string& ns) {
  auto deadline = std::chrono::steady_clock::now() + 60s;
  std::map<std::string, std::string> server, cache, seen;
  while (std::chrono::steady_clock::now() < deadline) {
    server = server_state(client, ns);
    cache = cache_state(informer);
    seen = view.state();
    if (cache == server && seen == server) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(cache.size(), server.size());
  EXPECT_TRUE(cache == server) << "informer cache differs from the server's list";
  EXPECT_TRUE(seen == server) << "handlers' final states differ from the server's list";
  EXPECT_EQ(view.duplicate_adds(), 0);
  EXPECT_EQ(view.bad_deletes(), 0);
}

json configmap(const std::string& name, const std::string& value) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"labels", {{"app", "informer-test"}}}}},
          {"data", {{"v", value}}}};
}

void create_namespace(kube::Client& c, const std::string& ns) {
  auto r = c.create(res::kNamespaces, "", {{"metadata", {{"name", ns}}}});
  ASSERT_TRUE(r.ok() || r.status().code() == Code::kAlreadyExists) << r.status().to_string();
}

// Creates configmaps [from, to) with `threads` clients in parallel.
void bulk_create(ControlPlane& cp, const std::string& ns, int from, int to, int threads) {
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto c = client_for(cp);
      for (int i = from + t; i < to; i += threads) {
        auto r = c->create(res::kConfigMaps, ns, configmap("cm-" + std::to_string(i), "0"));
        ASSERT_TRUE(r.ok()) << r.status().to_string();
      }
    });
  }
  for (auto& w : workers) w.join();
}

struct RunningInformer {
  RunningInformer(kube::Client& client, const std::string& ns, HandlerView& view)
      : informer(client, res::kConfigMaps,
                 {.ns = ns, .watch_timeout = 60s, .backoff_base = 100ms, .backoff_cap = 2s}) {
    informer.store().add_indexer("by-value", [](const json& o) {
      return std::vector<std::string>{o["data"].value("v", "")};
    });
    informer.add_handlers(view.handlers());
    thread = std::jthread([this](std::stop_token stop) { informer.run(stop); });
  }
  kube::Informer informer;
  std::jthread thread;
};

TEST(InformerTest, BulkCreationWhileSyncing) {
  auto& cp = ControlPlaneEnvironment::get();
  auto client = client_for(cp);
  create_namespace(*client, "bulk");
  bulk_create(cp, "bulk", 0, 2500, 4);
  HandlerView view;
  RunningInformer run(*client, "bulk", view);
  ASSERT_TRUE(run.informer.wait_for_sync({}, 60s));
  bulk_create(cp, "bulk", 2500, 5000, 4);  // the rest arrive through the watch
  expect_converges(*client, run.informer, view, "bulk");
  EXPECT_EQ(run.informer.store().size(), 5000u);
  EXPECT_EQ(run.informer.store().by_index("by-value", "0").size(), 5000u);
}

TEST(InformerTest, ApiserverRestartInTheMiddleOfAWatch) {
  auto& cp = ControlPlaneEnvironment::get();
  auto client = client_for(cp);
  create_namespace(*client, "restart");
  bulk_create(cp, "restart", 0, 50, 2);
  HandlerView view;
  RunningInformer run(*client, "restart", view);
  ASSERT_TRUE(run.informer.wait_for_sync({}, 30s));
  int64_t watches_before = run.informer.watches();
  ASSERT_TRUE(cp.restart_apiserver().ok());
  // Changes after the restart: updates, deletes and creates.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(client
                    ->patch(res::kConfigMaps, "restart", "cm-" + std::to_string(i),
                            kube::PatchType::kMerge, {{"data", {{"v", "1"}}}})
                    .ok());
  }
  for (int i = 10; i < 20; ++i) {
    ASSERT_TRUE(client->remove(res::kConfigMaps, "restart", "cm-" + std::to_string(i)).ok());
  }
  bulk_create(cp, "restart", 50, 60, 1);
  expect_converges(*client, run.informer, view, "restart");
  EXPECT_GT(run.informer.watches(), watches_before) << "the watch was resumed";
  EXPECT_EQ(run.informer.store().by_index("by-value", "1").size(), 10u);
}

TEST(InformerTest, CompactionForcesARelistThatMissesNothing) {
  // Without the watch cache the re-watch reaches etcd, where the informer's
  // resourceVersion is gone after compaction: the server answers 410.
  auto direct = ControlPlane::start({.watch_cache = false});
  ASSERT_TRUE(direct.ok()) << direct.status().to_string();
  ControlPlane& cp = **direct;
  auto client = client_for(cp);
  create_namespace(*client, "compact");
  create_namespace(*client, "noise");
  bulk_create(cp, "compact", 0, 30, 2);
  HandlerView view;
  RunningInformer run(*client, "compact", view);
  ASSERT_TRUE(run.informer.wait_for_sync({}, 30s));
  int64_t lists_before = run.informer.lists();

  // Changes the informer sees: its resourceVersion becomes r1.
  Status removed = client->remove(res::kConfigMaps, "compact", "cm-0");
  ASSERT_TRUE(removed.ok()) << removed.to_string();
  ASSERT_TRUE(client
                  ->patch(res::kConfigMaps, "compact", "cm-1", kube::PatchType::kMerge,
                          {{"data", {{"v", "2"}}}})
                  .ok());
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (run.informer.store().get("compact/cm-0") != nullptr &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  // Writes the informer does not watch move etcd's revision to r2 > r1;
  // compacting at r2 expires r1. Breaking the watch then makes the informer
  // resume from r1: the server must answer 410 and the informer re-list.
  bulk_create(cp, "noise", 0, 20, 2);
  ASSERT_TRUE(cp.compact_etcd().ok());
  ASSERT_TRUE(cp.restart_apiserver().ok());
  bulk_create(cp, "compact", 30, 40, 1);
  expect_converges(*client, run.informer, view, "compact");
  EXPECT_GT(run.informer.lists(), lists_before) << "the informer never re-listed after 410";
  std::printf("lists before %lld, after %lld; last error: %s\n",
              static_cast<long long>(lists_before), static_cast<long long>(run.informer.lists()),
              run.informer.last_error().c_str());
}

}  // namespace
}  // namespace ferry::testing
