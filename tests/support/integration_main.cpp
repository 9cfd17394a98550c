// main() of every integration test binary: one real control plane
// (etcd + kube-apiserver) for the whole binary, started before the first
// test and removed after the last.
#include <gtest/gtest.h>

#include "control_plane.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new ferry::testing::ControlPlaneEnvironment());
  return RUN_ALL_TESTS();
}
