// Integration tests of the control-plane fixture itself: the rest of the
// integration suite relies on restart and compaction behaving as stated.
#include "control_plane.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;

ControlPlane& cp() {
  return ControlPlaneEnvironment::get();
}

bool alive(pid_t pid) {
  return pid > 0 && kill(pid, 0) == 0;
}

TEST(ControlPlaneTest, ServesTheApi) {
  auto r = cp().kubectl({"get", "namespace", "default", "-o", "name"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_EQ(r->out, "namespace/default\n");
}

TEST(ControlPlaneTest, AdminIsClusterAdmin) {
  auto r = cp().kubectl({"auth", "can-i", "*", "*", "--all-namespaces"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "yes\n") << r->err;
}

TEST(ControlPlaneTest, DataSurvivesApiserverRestart) {
  auto created = cp().kubectl({"create", "configmap", "survives-restart", "--from-literal=k=v"});
  ASSERT_TRUE(created.ok());
  ASSERT_EQ(created->exit_code, 0) << created->err;
  pid_t before = cp().apiserver_pid();
  ASSERT_TRUE(cp().restart_apiserver().ok());
  EXPECT_NE(cp().apiserver_pid(), before);
  EXPECT_FALSE(alive(before));
  auto got = cp().kubectl({"get", "configmap", "survives-restart", "-o", "jsonpath={.data.k}"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->out, "v") << got->err;
}

TEST(ControlPlaneTest, CompactionExpiresOldResourceVersions) {
  // A second control plane without the watch cache, so a watch from an old
  // resourceVersion reaches etcd and must be answered with 410 Gone.
  auto direct = ControlPlane::start({.watch_cache = false});
  ASSERT_TRUE(direct.ok()) << direct.status().to_string();
  auto& c = **direct;
  auto first =
      c.kubectl({"create", "configmap", "a", "-o", "jsonpath={.metadata.resourceVersion}"});
  ASSERT_TRUE(first.ok() && first->exit_code == 0);
  std::string old_rv = first->out;
  // Two more writes, so that the first event after old_rv (b) lies below the
  // compaction revision (c) whatever else the API server writes meanwhile.
  ASSERT_TRUE(c.kubectl({"create", "configmap", "b"}).ok());
  ASSERT_TRUE(c.kubectl({"create", "configmap", "c", "-n", "kube-system"}).ok());
  auto revision = c.compact_etcd();
  ASSERT_TRUE(revision.ok()) << revision.status().to_string();
  EXPECT_GT(*revision, std::stoll(old_rv));

  auto watch = c.kubectl({"get", "--raw",
                          "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=5&"
                          "resourceVersion=" +
                              old_rv});
  ASSERT_TRUE(watch.ok()) << watch.status().to_string();
  EXPECT_NE(watch->out.find("\"code\":410"), std::string::npos) << watch->out << watch->err;
}

TEST(ControlPlaneTest, TeardownLeavesNothingBehind) {
  std::string dir;
  pid_t etcd = -1, apiserver = -1;
  {
    auto extra = ControlPlane::start();
    ASSERT_TRUE(extra.ok()) << extra.status().to_string();
    dir = (*extra)->work_dir();
    etcd = (*extra)->etcd_pid();
    apiserver = (*extra)->apiserver_pid();
    ASSERT_TRUE(alive(etcd));
    ASSERT_TRUE(alive(apiserver));
    ASSERT_TRUE(std::filesystem::exists(dir));
  }
  EXPECT_FALSE(alive(etcd));
  EXPECT_FALSE(alive(apiserver));
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
}  // namespace ferry::testing
