// Effective settings: the Migration's own spec wins, then the first
// MigrationPolicy by name that selects the pod (podSelector empty selects
// none; namespaceSelector empty selects all), then the defaults.
#include "migration/policy.h"

#include <gtest/gtest.h>

namespace ferry::operator_ {
namespace {

using nlohmann::json;

json policy(const std::string& name, json spec) {
  return {{"metadata", {{"name", name}}}, {"spec", std::move(spec)}};
}

const json kPod = {{"metadata", {{"labels", {{"app", "cart"}, {"tier", "web"}}}}}};

Resolution resolve(const api::MigrationSpec& spec, const std::vector<json>& policies,
                   const json& ns_labels = json::object()) {
  std::vector<const json*> views;
  views.reserve(policies.size());
  for (const auto& p : policies) views.push_back(&p);
  return resolve_effective(spec, kPod, ns_labels, views);
}

TEST(SelectorTest, MatchLabelsAndEveryExpressionOperator) {
  json labels = {{"app", "cart"}, {"tier", "web"}};
  EXPECT_TRUE(selector_matches({{"matchLabels", {{"app", "cart"}}}}, labels, false));
  EXPECT_FALSE(selector_matches({{"matchLabels", {{"app", "shop"}}}}, labels, false));
  auto expr = [](const char* key, const char* op, json values = json::array()) {
    return json{{"matchExpressions", {{{"key", key}, {"operator", op}, {"values", values}}}}};
  };
  EXPECT_TRUE(selector_matches(expr("tier", "In", {"web", "db"}), labels, false));
  EXPECT_FALSE(selector_matches(expr("tier", "NotIn", {"web"}), labels, false));
  EXPECT_TRUE(selector_matches(expr("zone", "DoesNotExist"), labels, false));
  EXPECT_TRUE(selector_matches(expr("app", "Exists"), labels, false));
  EXPECT_FALSE(selector_matches(expr("app", "Bogus"), labels, false)) << "unknown op selects none";
  EXPECT_FALSE(selector_matches(json::object(), labels, false));
  EXPECT_TRUE(selector_matches(json::object(), labels, true));
  EXPECT_TRUE(selector_matches(json(), labels, true));
}

TEST(ResolveTest, DefaultsWithoutAPolicy) {
  Resolution r = resolve({}, {});
  EXPECT_EQ(r.effective, (api::Effective{"", "Cold", 600, 120}));
  EXPECT_EQ(r.fallback_mode, "");
}

TEST(ResolveTest, FirstMatchingPolicyByNameFillsWhatTheSpecLeavesOpen) {
  std::vector<json> policies = {
      policy("z-cart",
             {{"podSelector", {{"matchLabels", {{"app", "cart"}}}}}, {"mode", "PreCopy"}}),
      policy("a-cart", {{"podSelector", {{"matchLabels", {{"app", "cart"}}}}},
                        {"mode", "PostCopy"},
                        {"fallbackMode", "Cold"},
                        {"timeouts", {{"progressSeconds", 30}}}}),
      policy("0-other", {{"podSelector", {{"matchLabels", {{"app", "other"}}}}}, {"mode", "Cold"}}),
      policy("0-empty", {{"mode", "Cold"}}),  // empty podSelector: selects none
  };
  Resolution r = resolve({}, policies);
  EXPECT_EQ(r.effective, (api::Effective{"a-cart", "PostCopy", 600, 30}));
  EXPECT_EQ(r.fallback_mode, "Cold");

  api::MigrationSpec spec;
  spec.mode = "Cold";
  spec.progress_seconds = 45;
  r = resolve(spec, policies);
  EXPECT_EQ(r.effective, (api::Effective{"a-cart", "Cold", 600, 45})) << "the spec wins";
}

TEST(ResolveTest, NamespaceSelectorLimitsThePolicy) {
  std::vector<json> policies = {
      policy("prod-only", {{"podSelector", {{"matchLabels", {{"tier", "web"}}}}},
                           {"namespaceSelector", {{"matchLabels", {{"env", "prod"}}}}},
                           {"timeouts", {{"completionSeconds", 60}}}})};
  std::vector<const json*> views = {&policies[0]};
  EXPECT_TRUE(needs_namespace_labels(views));
  EXPECT_EQ(resolve({}, policies, {{"env", "dev"}}).effective.policy, "");
  EXPECT_EQ(resolve({}, policies, {{"env", "prod"}}).effective,
            (api::Effective{"prod-only", "Cold", 60, 120}));
}

TEST(ResolveTest, TheOperatorsDefaultTimeoutsApplyWhereNothingElseSetsThem) {
  const DefaultTimeouts defaults{.completion_seconds = 900, .progress_seconds = 45};
  const json p = policy("a", {{"podSelector", {{"matchLabels", {{"app", "cart"}}}}},
                              {"timeouts", {{"progressSeconds", 30}}}});
  std::vector<const json*> none, one = {&p};
  Resolution r = resolve_effective({}, kPod, json::object(), none, defaults);
  EXPECT_EQ(r.effective.completion_seconds, 900);
  EXPECT_EQ(r.effective.progress_seconds, 45);
  r = resolve_effective({}, kPod, json::object(), one, defaults);
  EXPECT_EQ(r.effective.completion_seconds, 900) << "the policy leaves it open";
  EXPECT_EQ(r.effective.progress_seconds, 30) << "the policy's";
  api::MigrationSpec spec;
  spec.progress_seconds = 10;
  EXPECT_EQ(resolve_effective(spec, kPod, json::object(), one, defaults).effective.progress_seconds,
            10)
      << "the Migration's own";
}

}  // namespace
}  // namespace ferry::operator_
