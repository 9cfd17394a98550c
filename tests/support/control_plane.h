// A real Kubernetes control plane for integration tests (the role
// controller-runtime's envtest plays for Go): etcd and kube-apiserver from
// the pinned toolchain, on loopback ports chosen by the kernel, with their
// own PKI in a temporary directory. Tests can restart the apiserver and
// compact etcd while they run, to exercise watch resumption and 410 Gone.
// Everything started is stopped and removed by the destructor.
//
// Use from GoogleTest through ControlPlaneEnvironment (one control plane per
// test binary), or from scripts through the ferry-testenv binary.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "free_port.h"
#include "process/subprocess.h"
#include "status/status.h"

namespace ferry::testing {

struct ControlPlaneOptions {
  // Directory holding the pinned binaries; empty: $FERRY_TOOL_BIN, else PATH.
  std::string bin_dir;
  // Serve watches from the apiserver's watch cache (the default in real
  // clusters). Off, watches go to etcd and see compactions as 410 at once.
  bool watch_cache = true;
  // Directory for data, certificates and logs; empty: a new temp directory,
  // removed on teardown.
  std::string work_dir;
  std::chrono::seconds ready_timeout{30};
};

class ControlPlane {
 public:
  static Result<std::unique_ptr<ControlPlane>> start(ControlPlaneOptions options = {});
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // https://127.0.0.1:<port>
  const std::string& server() const { return server_; }
  // A kubeconfig with cluster-admin credentials (system:masters client cert).
  const std::string& kubeconfig_path() const { return kubeconfig_path_; }
  const std::string& work_dir() const { return dir_; }
  std::string ca_cert_path() const { return dir_ + "/pki/ca.crt"; }
  std::string admin_cert_path() const { return dir_ + "/pki/admin.crt"; }
  std::string admin_key_path() const { return dir_ + "/pki/admin.key"; }
  // The etcd client endpoint, for tests that look underneath the apiserver.
  const std::string& etcd_endpoint() const { return etcd_endpoint_; }

  // Process ids, for tests of the fixture itself (-1 when not running).
  pid_t apiserver_pid() const { return apiserver_ ? apiserver_->pid() : -1; }
  pid_t etcd_pid() const { return etcd_ ? etcd_->pid() : -1; }

  // Stops the apiserver (SIGTERM) and starts it again on the same port;
  // returns once /readyz answers 200 again.
  Status restart_apiserver();
  Status stop_apiserver();
  Status start_apiserver();
  // Compacts etcd up to its current revision; returns that revision.
  Result<int64_t> compact_etcd();
  // Runs kubectl against this control plane.
  Result<process::Output> kubectl(const std::vector<std::string>& args,
                                  const std::string& stdin_data = {});

 private:
  ControlPlane() = default;
  Status write_pki();
  Status start_etcd();
  Status wait_ready(std::chrono::seconds timeout);
  std::string bin(const std::string& name) const;

  ControlPlaneOptions options_;
  std::string dir_;
  bool owns_dir_ = false;
  std::string server_;
  std::string kubeconfig_path_;
  std::string etcd_endpoint_;
  int etcd_peer_port_ = 0;
  int apiserver_port_ = 0;
  std::optional<process::Subprocess> etcd_;
  std::optional<process::Subprocess> apiserver_;
};

// GoogleTest environment owning one ControlPlane for the whole test binary.
// Register it in main() or with ::testing::AddGlobalTestEnvironment.
class ControlPlaneEnvironment : public ::testing::Environment {
 public:
  explicit ControlPlaneEnvironment(ControlPlaneOptions options = {})
      : options_(std::move(options)) {}
  void SetUp() override;
  void TearDown() override;
  // The running control plane; only valid between SetUp and TearDown.
  static ControlPlane& get();

 private:
  ControlPlaneOptions options_;
};

}  // namespace ferry::testing
