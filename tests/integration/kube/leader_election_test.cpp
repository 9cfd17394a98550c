// Leader election with two real processes contending for one Lease on a
// real API server: exactly one leads; killing the leader hands over within
// the lease duration; a leader that cannot renew stops its work before its
// lease could expire.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "control_plane.h"
#include "kube_client.h"
#include "process/subprocess.h"
#include "wait_until.h"

#ifndef FERRY_LEASE_CONTENDER
#error "FERRY_LEASE_CONTENDER must name the contender binary"
#endif

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kLeaseNs = 4'000'000'000, kRetryNs = 500'000'000;

struct Event {
  std::string kind;
  int64_t at = 0;
  int64_t renew = 0;
};

std::vector<Event> read_events(const std::string& path) {
  std::vector<Event> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    Event e;
    ss >> e.kind >> e.at >> e.renew;
    if (!e.kind.empty()) out.push_back(e);
  }
  return out;
}

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// [start, end) intervals in which a contender did leader-only work.
std::vector<std::pair<int64_t, int64_t>> work_intervals(const std::vector<Event>& events) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t start = -1, last = -1;
  for (const auto& e : events) {
    if (e.kind == "start") start = last = e.at;
    if (e.kind == "work") last = e.at;
    if (e.kind == "stop" && start >= 0) {
      out.emplace_back(start, e.at);
      start = -1;
    }
  }
  if (start >= 0) out.emplace_back(start, last);  // killed while leading
  return out;
}

bool has(const std::string& path, const char* kind) {
  for (const auto& e : read_events(path)) {
    if (e.kind == kind) return true;
  }
  return false;
}

TEST(LeaderElectionTest, OneLeaderHandoverAndSelfFencing) {
  auto& cp = ControlPlaneEnvironment::get();
  std::string dir = cp.work_dir() + "/lease-test";
  std::filesystem::create_directories(dir);
  auto spawn = [&](const std::string& id) {
    auto p = process::Subprocess::spawn(
        {.argv = {FERRY_LEASE_CONTENDER, "--kubeconfig=" + cp.kubeconfig_path(), "--identity=" + id,
                  "--events=" + dir + "/" + id + ".events"},
         .output_file = dir + "/" + id + ".log"});
    EXPECT_TRUE(p.ok());
    return std::move(p).value();
  };
  std::string a_events = dir + "/a.events", b_events = dir + "/b.events";
  auto a = spawn("a");
  auto b = spawn("b");

  // Exactly one leads.
  ASSERT_TRUE(wait_until([&] { return has(a_events, "start") || has(b_events, "start"); }, 30s));
  std::this_thread::sleep_for(3 * std::chrono::nanoseconds(kLeaseNs));  // let a rival try
  bool a_leads = has(a_events, "start");
  ASSERT_NE(a_leads, has(b_events, "start")) << "both or neither became leader";
  auto holder = cp.kubectl({"get", "lease", "ferry-test", "-o", "jsonpath={.spec.holderIdentity}"});
  ASSERT_TRUE(holder.ok());
  EXPECT_EQ(holder->out, a_leads ? "a" : "b");

  // Killing the leader hands over within the lease duration (+ one retry
  // period for the follower to look again).
  auto& leader = a_leads ? a : b;
  const std::string follower_events = a_leads ? b_events : a_events;
  int64_t killed_at = mono_ns();
  ASSERT_TRUE(leader.signal(SIGKILL).ok());
  ASSERT_TRUE(wait_until([&] { return has(follower_events, "start"); }, 30s));
  int64_t took = 0;
  for (const auto& e : read_events(follower_events)) {
    if (e.kind == "start") took = e.at - killed_at;
  }
  std::printf("handover after leader kill: %.2f s (lease %.1f s)\n", took / 1e9, kLeaseNs / 1e9);
  EXPECT_LE(took, kLeaseNs + 2 * kRetryNs);

  // No two leaders' work ever overlapped.
  auto ia = work_intervals(read_events(a_events)), ib = work_intervals(read_events(b_events));
  for (const auto& x : ia) {
    for (const auto& y : ib) {
      EXPECT_TRUE(x.second < y.first || y.second < x.first)
          << "work intervals overlap: [" << x.first << "," << x.second << ") and [" << y.first
          << "," << y.second << ")";
    }
  }

  // A leader that cannot renew stops working before its lease expires.
  ASSERT_TRUE(cp.stop_apiserver().ok());
  ASSERT_TRUE(wait_until([&] { return has(follower_events, "stop"); }, 30s))
      << "the leader kept working without renewing";
  auto events = read_events(follower_events);
  int64_t last_renew = 0, stopped = 0, last_work = 0;
  for (const auto& e : events) {
    if (e.kind == "work") {
      last_renew = e.renew;
      last_work = e.at;
    }
    if (e.kind == "stop") stopped = e.at;
  }
  std::printf("leader stopped %.2f s after its last renew (lease %.1f s)\n",
              (stopped - last_renew) / 1e9, kLeaseNs / 1e9);
  EXPECT_LT(stopped - last_renew, kLeaseNs);
  EXPECT_LE(last_work, stopped);
  ASSERT_TRUE(cp.start_apiserver().ok());
}

}  // namespace
}  // namespace ferry::testing
