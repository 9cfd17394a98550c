// The ferry-operator binary itself against a real API server: it takes the
// Lease, reconciles Migrations, serves Prometheus metrics, and releases the
// Lease when stopped.
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "control_plane.h"
#include "process/subprocess.h"
#include "wait_until.h"

#ifndef FERRY_OPERATOR_BIN
#error "FERRY_OPERATOR_BIN must name the ferry-operator binary"
#endif
#ifndef FERRY_CRD_DIR
#error "FERRY_CRD_DIR must name the crds/ directory"
#endif

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;

bool wait(const std::function<bool()>& cond, std::chrono::seconds timeout = 30s) {
  return wait_until(cond, timeout, 100ms);
}

TEST(OperatorBinaryTest, LeadsReconcilesServesMetricsAndReleases) {
  auto& cp = ControlPlaneEnvironment::get();
  ASSERT_EQ(cp.kubectl({"apply", "-f", FERRY_CRD_DIR})->exit_code, 0);
  ASSERT_EQ(cp.kubectl({"wait", "--for=condition=Established", "--timeout=30s",
                        "crd/migrations.ferry.dev"})
                ->exit_code,
            0);
  auto port = free_port();
  ASSERT_TRUE(port.ok());
  std::string metrics = "127.0.0.1:" + std::to_string(*port);
  std::string log = cp.work_dir() + "/operator.log";
  auto op = process::Subprocess::spawn(
      {.argv = {FERRY_OPERATOR_BIN, "--kubeconfig=" + cp.kubeconfig_path(),
                "--metrics-bind-address=" + metrics, "--leader-elect",
                "--leader-election-namespace=default"},
       .output_file = log});
  ASSERT_TRUE(op.ok());

  EXPECT_TRUE(wait([&] {
    auto r =
        cp.kubectl({"get", "lease", "ferry-operator", "-o", "jsonpath={.spec.holderIdentity}"});
    return r.ok() && !r->out.empty();
  })) << "the operator took the Lease";

  ASSERT_EQ(cp.kubectl({"apply", "-f", "-"}, R"(
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: from-binary, namespace: default}
spec: {podName: nobody}
)")
                ->exit_code,
            0);
  EXPECT_TRUE(wait([&] {
    auto r =
        cp.kubectl({"get", "migration", "from-binary", "-o", "jsonpath={.status.failure.reason}"});
    return r.ok() && r->out == "PodNotFound";
  })) << "the operator reconciled the Migration";

  auto scraped = process::run({"curl", "-sf", "http://" + metrics + "/metrics"});
  ASSERT_TRUE(scraped.ok());
  EXPECT_NE(scraped->out.find("ferry_kube_requests_total"), std::string::npos) << scraped->out;

  ASSERT_TRUE(op->signal(SIGTERM).ok());
  auto exited = op->wait(30s);
  ASSERT_TRUE(exited.ok()) << "the operator stops on SIGTERM";
  EXPECT_EQ(process::exit_code(*exited), 0);
  auto holder =
      cp.kubectl({"get", "lease", "ferry-operator", "-o", "jsonpath={.spec.holderIdentity}"});
  EXPECT_EQ(holder->out, "") << "the Lease was released";
}

}  // namespace
}  // namespace ferry::testing
