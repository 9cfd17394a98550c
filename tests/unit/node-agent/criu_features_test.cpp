#include "checkpoint/criu_features.h"

#include <gtest/gtest.h>

#include <set>

namespace ferry::checkpoint {
namespace {

// A fake criu: version 4.2.1; `criu check` passes; features as given (and
// "lazy-dump-mode" for the option of our patched CRIU, listed by --help;
// "gnutls" for a CRIU that links GnuTLS, as `ldd` shows).
CommandRunner fake_criu(const std::set<std::string>& features, bool check_ok = true) {
  return [=](const std::vector<std::string>& argv) -> Result<std::pair<int, std::string>> {
    if (argv[0] == "ldd") {
      return std::make_pair(
          0, std::string("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f0)\n") +
                 (features.contains("gnutls")
                      ? "\tlibgnutls.so.30 => /lib/x86_64-linux-gnu/libgnutls.so.30 (0x7f1)\n"
                      : ""));
    }
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
  auto f = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop", "gnutls"}));
  ASSERT_TRUE(f.ok());
  Status s = check_mode_supported(Mode::kPreCopy, *f);
  EXPECT_EQ(s.code(), Code::kUnsupported);
  EXPECT_EQ(s.reason(), "ModeUnsupportedOnNode");
  EXPECT_NE(s.message().find("unsupported on this node"), std::string::npos);
  EXPECT_NE(s.message().find("soft-dirty"), std::string::npos);
  EXPECT_TRUE(check_mode_supported(Mode::kCold, *f).ok());
  EXPECT_TRUE(check_mode_supported(Mode::kPostCopy, *f).ok());
}

// PostCopy's pages travel only over TLS: a CRIU without GnuTLS (which
// would accept --tls and fail every transfer) makes PostCopy unsupported.
TEST(CriuFeaturesTest, PostCopyNeedsACriuWithGnuTls) {
  auto with = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop", "gnutls"}));
  ASSERT_TRUE(with.ok());
  EXPECT_TRUE(with->tls);
  EXPECT_TRUE(check_mode_supported(Mode::kPostCopy, *with).ok());
  auto without = detect_criu_features("criu", fake_criu({"uffd", "uffd-noncoop"}));
  ASSERT_TRUE(without.ok());
  EXPECT_FALSE(without->tls);
  Status s = check_mode_supported(Mode::kPostCopy, *without);
  EXPECT_EQ(s.code(), Code::kUnsupported);
  EXPECT_EQ(s.reason(), "ModeUnsupportedOnNode");
  EXPECT_NE(s.message().find("without GnuTLS"), std::string::npos) << s.message();
  EXPECT_TRUE(check_mode_supported(Mode::kCold, *without).ok());
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
