#include "checkpoint/criu_features.h"

#include <gtest/gtest.h>

#include <set>

namespace ferry::checkpoint {
namespace {

// A fake criu: version 4.2.1; `criu check` passes; features as given (and
// "lazy-dump-mode" for the option of our patched CRIU, listed by --help).
CommandRunner fake_criu(const std::set<std::string>& features, bool check_ok = true) {
  return [=](const std::vector<std::string>& argv) -> Result<std::pair<int, std::string>> {
    if (argv[1] == "--version") return std::make_pair(0, std::string("Version: 4.2.1\n"));
    if (argv[1] == "--help") {
      return std::make_pair(0, std::string("  --pre-dump-mode       splice\n") +
                                   (features.contains("lazy-dump-mode")
                                        ? "  --lazy-dump-mode      how dump --lazy-pages\n"
                                        : ""));
    }
    if (argv.size() == 2) return std::make_pair(check_ok ? 0 : 1, std::string());
    return std::make_pair(features.contains(argv[3]) ? 0 : 1, std::string());
  };
}

TEST(CriuFeaturesTest, DetectsWhatTheKernelOffers) {
  auto f = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop"}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->criu_version, "4.2.1");
  EXPECT_TRUE(f->check_passed);
  EXPECT_TRUE(f->uffd);
  EXPECT_TRUE(f->uffd_noncoop);
  EXPECT_FALSE(f->mem_dirty_track);
  EXPECT_FALSE(f->lazy_dump_read) << "a stock CRIU's help has no --lazy-dump-mode";
}

TEST(CriuFeaturesTest, DetectsOurCriusLazyDumpReadMode) {
  auto f = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop", "lazy-dump-mode"}));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->lazy_dump_read);
}

TEST(CriuFeaturesTest, PreCopyWithoutSoftDirtyIsUnsupportedWithAClearReason) {
  auto f = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop"}));
  ASSERT_TRUE(f.ok());
  Status s = check_mode_supported(Mode::kPreCopy, *f);
  EXPECT_EQ(s.code(), Code::kUnsupported);
  EXPECT_EQ(s.reason(), "ModeUnsupportedOnNode");
  EXPECT_NE(s.message().find("unsupported on this node"), std::string::npos);
  EXPECT_NE(s.message().find("soft-dirty"), std::string::npos);
  EXPECT_TRUE(check_mode_supported(Mode::kCold, *f).ok());
  EXPECT_TRUE(check_mode_supported(Mode::kPostCopy, *f).ok());
}

TEST(CriuFeaturesTest, PreCopyAllowedWithSoftDirty) {
  auto f = detect_criu_features("criu", fake_criu({"mem_dirty_track"}));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(check_mode_supported(Mode::kPreCopy, *f).ok());
  EXPECT_EQ(check_mode_supported(Mode::kPostCopy, *f).code(), Code::kUnsupported);
}

TEST(CriuFeaturesTest, BrokenCriuRefusesEveryMode) {
  auto f = detect_criu_features("criu", fake_criu({}, /*check_ok=*/false));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(check_mode_supported(Mode::kCold, *f).code(), Code::kUnsupported);
}

TEST(CriuFeaturesTest, ModeNames) {
  EXPECT_EQ(*parse_mode("PostCopy"), Mode::kPostCopy);
  EXPECT_EQ(*parse_mode(""), Mode::kCold);
  EXPECT_EQ(mode_name(Mode::kPreCopy), "PreCopy");
  EXPECT_EQ(parse_mode("Warm").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::checkpoint
