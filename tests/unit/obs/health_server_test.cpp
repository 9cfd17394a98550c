// /healthz and /readyz (lib/obs/health_server.h) on a loopback port, read
// through lib/kube's HTTP client as kubelet's probes would: /healthz is 200
// while serving, /readyz follows ready() (503 with its reason), other paths
// are 404 and other methods 405.
#include "obs/health_server.h"

#include <gtest/gtest.h>

#include <atomic>

#include "kube/http.h"

namespace ferry::obs {
namespace {

using namespace std::chrono_literals;

TEST(HealthServerTest, ReadyzFollowsTheReadinessCheck) {
  std::atomic<bool> synced = false;
  auto server = HealthServer::start("127.0.0.1:0", [&] {
    return synced ? Status() : Status(Code::kUnavailable, "informer caches not synced yet");
  });
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  auto transport =
      kube::make_cpprest_transport("http://127.0.0.1:" + std::to_string((*server)->port()), {});
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto get = [&](const std::string& method, const std::string& path) {
    auto r = (*transport)->round_trip({.method = method, .target = path, .timeout = 10s});
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : kube::HttpResponse{};
  };
  EXPECT_EQ(get("GET", "/healthz").status, 200);
  auto not_ready = get("GET", "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_EQ(not_ready.body, "informer caches not synced yet\n");
  synced = true;
  auto ready = get("GET", "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ok\n");
  EXPECT_EQ(get("GET", "/metrics").status, 404);
  EXPECT_EQ(get("POST", "/healthz").status, 405);
}

TEST(HealthServerTest, ATakenPortIsBindFailed) {
  auto first = HealthServer::start("127.0.0.1:0", nullptr);
  ASSERT_TRUE(first.ok());
  auto second = HealthServer::start("127.0.0.1:" + std::to_string((*first)->port()), nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().reason(), "BindFailed");
}

}  // namespace
}  // namespace ferry::obs
