#include "checkpoint/checkpoint_cgroups.h"

#include <gtest/gtest.h>

namespace ferry::checkpoint {
namespace {

TEST(CheckpointCgroupsTest, TheNameIsOnePathComponent) {
  for (const char* bad : {"", "a/b", "..", "."}) {
    auto c = CheckpointCgroups::discover(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ferry::checkpoint
