// Builds a lib/kube Client for a test control plane from its kubeconfig.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "control_plane.h"
#include "kube/client.h"

namespace ferry::testing {

inline std::unique_ptr<kube::Client> client_for(const ControlPlane& cp,
                                                kube::ClientOptions options = {}) {
  auto config = kube::load_kubeconfig(cp.kubeconfig_path());
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  if (!config.ok()) return nullptr;
  auto client = kube::Client::create(*config, std::move(options));
  EXPECT_TRUE(client.ok()) << client.status().to_string();
  return client.ok() ? std::move(client).value() : nullptr;
}

}  // namespace ferry::testing
