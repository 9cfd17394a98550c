#include "status/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace ferry {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.to_string(), "Ok");
}

TEST(StatusTest, ContextPrefixesErrorsOnly) {
  Status err = not_found("pod default/x not found");
  EXPECT_EQ(err.with_context("migrate").message(), "migrate: pod default/x not found");
  EXPECT_EQ(err.with_context("migrate").code(), Code::kNotFound);
  EXPECT_TRUE(Status().with_context("migrate").ok());
  EXPECT_EQ(err.to_string(), "NotFound: pod default/x not found");
}

TEST(ResultTest, HoldsValueOrStatus) {
  Result<int> good = 7;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 7);
  EXPECT_TRUE(good.status().ok());

  Result<int> bad = unavailable("apiserver down");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kUnavailable);
}

TEST(ResultTest, MovesOutMoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(3);
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 3);
}

Status fails_then_continues(bool fail, int* reached) {
  FERRY_RETURN_IF_ERROR(fail ? invalid_argument("no") : Status());
  *reached = 1;
  return {};
}

TEST(StatusTest, ReturnIfErrorStopsAtFirstError) {
  int reached = 0;
  EXPECT_EQ(fails_then_continues(true, &reached).code(), Code::kInvalidArgument);
  EXPECT_EQ(reached, 0);
  EXPECT_TRUE(fails_then_continues(false, &reached).ok());
  EXPECT_EQ(reached, 1);
}

TEST(StatusTest, EveryCodeHasAName) {
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c) {
    EXPECT_NE(code_name(static_cast<Code>(c)), "Unknown") << c;
  }
}

}  // namespace
}  // namespace ferry
