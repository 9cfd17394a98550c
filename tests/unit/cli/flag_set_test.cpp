#include "cli/flag_set.h"

#include <gtest/gtest.h>

#include <vector>

namespace ferry::cli {
namespace {

FlagSet make_flags() {
  FlagSet flags("ferry-test", "a test binary");
  flags.add_string("kubeconfig", "", "Path to a kubeconfig.");
  flags.add_string("bind", ":8080", "Bind address.");
  flags.add_bool("leader-elect", "Elect a leader.");
  return flags;
}

ParseOutcome parse(FlagSet& flags, std::vector<const char*> args) {
  return flags.parse(args);
}

TEST(FlagSetTest, DefaultsApplyWhenFlagsAreAbsent) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {}), ParseOutcome::kRun);
  EXPECT_EQ(flags.get("bind"), ":8080");
  EXPECT_EQ(flags.get("kubeconfig"), "");
  EXPECT_FALSE(flags.get_bool("leader-elect"));
}

TEST(FlagSetTest, AcceptsEqualsAndSeparateValueForms) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"--kubeconfig=/a", "--bind", ":9"}), ParseOutcome::kRun);
  EXPECT_EQ(flags.get("kubeconfig"), "/a");
  EXPECT_EQ(flags.get("bind"), ":9");
}

TEST(FlagSetTest, EmptyValueAfterEqualsIsKept) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"--bind="}), ParseOutcome::kRun);
  EXPECT_EQ(flags.get("bind"), "");
}

TEST(FlagSetTest, BooleanForms) {
  FlagSet a = make_flags();
  ASSERT_EQ(parse(a, {"--leader-elect"}), ParseOutcome::kRun);
  EXPECT_TRUE(a.get_bool("leader-elect"));
  FlagSet b = make_flags();
  ASSERT_EQ(parse(b, {"--leader-elect=false"}), ParseOutcome::kRun);
  EXPECT_FALSE(b.get_bool("leader-elect"));
}

TEST(FlagSetTest, BooleanRejectsOtherValues) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"--leader-elect=yes"}), ParseOutcome::kError);
  EXPECT_EQ(flags.error(), "flag --leader-elect takes true or false, got \"yes\"");
}

TEST(FlagSetTest, UnknownFlagIsAnError) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"--kubeconfg=/a"}), ParseOutcome::kError);
  EXPECT_EQ(flags.error(), "unknown flag: --kubeconfg");
}

TEST(FlagSetTest, MissingValueIsAnError) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"--bind"}), ParseOutcome::kError);
  EXPECT_EQ(flags.error(), "flag --bind needs a value");
}

TEST(FlagSetTest, HelpAndVersionWinOverLaterErrors) {
  FlagSet a = make_flags();
  EXPECT_EQ(parse(a, {"--help", "--nope"}), ParseOutcome::kHelp);
  FlagSet b = make_flags();
  EXPECT_EQ(parse(b, {"-h"}), ParseOutcome::kHelp);
  FlagSet c = make_flags();
  EXPECT_EQ(parse(c, {"--version"}), ParseOutcome::kVersion);
}

TEST(FlagSetTest, PositionalsAndDoubleDash) {
  FlagSet flags = make_flags();
  ASSERT_EQ(parse(flags, {"create", "--bind=:1", "--", "--not-a-flag", "x"}), ParseOutcome::kRun);
  EXPECT_EQ(flags.positional(), (std::vector<std::string>{"create", "--not-a-flag", "x"}));
}

TEST(FlagSetTest, HelpListsEveryFlagWithDefault) {
  FlagSet flags = make_flags();
  std::string help = flags.help();
  EXPECT_NE(help.find("--kubeconfig string"), std::string::npos);
  EXPECT_NE(help.find("(default \":8080\")"), std::string::npos);
  EXPECT_NE(help.find("--leader-elect\n"), std::string::npos);
  EXPECT_NE(help.find("--version"), std::string::npos);
}

TEST(FlagSetTest, VersionLineNamesProgram) {
  FlagSet flags = make_flags();
  EXPECT_EQ(flags.version_line().rfind("ferry-test version ", 0), 0u);
}

}  // namespace
}  // namespace ferry::cli
