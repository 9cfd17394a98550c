// Where the API server is and how to authenticate to it: kubeconfig files
// (current or named context; clusters with CA file or data; users with
// client certificates, tokens or token files) and in-cluster service-account
// config. Token files are re-read when they change, because kubelet rotates
// projected service-account tokens under a running pod.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "kube/http.h"
#include "status/status.h"

namespace ferry::kube {

struct RestConfig {
  std::string server;  // https://host:port
  TlsConfig tls;
  std::string bearer_token;       // static token, when set
  std::string bearer_token_file;  // re-read on rotation, when set
  std::string default_namespace = "default";
};

// Parses a kubeconfig file. `context` empty: its current-context. Relative
// file references resolve against the kubeconfig's directory, as kubectl does.
Result<RestConfig> load_kubeconfig(const std::string& path, const std::string& context = {});

// Config from the pod's service account (KUBERNETES_SERVICE_HOST/PORT and
// /var/run/secrets/kubernetes.io/serviceaccount/). `root` is for tests.
Result<RestConfig> in_cluster_config(const std::string& root = {});

// The usual lookup: explicit path, else $KUBECONFIG, else in-cluster, else
// ~/.kube/config.
Result<RestConfig> load_config(const std::string& kubeconfig_path);

// Supplies the Authorization header value, re-reading a token file when its
// modification time changes (checked at most once per `recheck`).
class BearerTokenSource {
 public:
  BearerTokenSource(std::string token, std::string token_file,
                    std::chrono::seconds recheck = std::chrono::seconds(10));
  // "Bearer <token>", or empty when there is no token.
  std::string header();

 private:
  std::mutex mu_;
  std::string token_;       // guarded by mu_
  const std::string file_;  // empty: static token
  const std::chrono::seconds recheck_;
  std::chrono::steady_clock::time_point next_check_{};  // guarded by mu_
  int64_t file_mtime_ns_ = -1;                          // guarded by mu_
};

}  // namespace ferry::kube
