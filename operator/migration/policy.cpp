#include "migration/policy.h"

#include <algorithm>
#include <set>

namespace ferry::operator_ {
namespace {

using nlohmann::json;

bool empty_selector(const json& selector) {
  return !selector.is_object() || (selector.value("matchLabels", json::object()).empty() &&
                                   selector.value("matchExpressions", json::array()).empty());
}

}  // namespace

bool selector_matches(const json& selector, const json& labels, bool empty_matches_all) {
  if (empty_selector(selector)) return empty_matches_all;
  const json l = labels.is_object() ? labels : json::object();
  const json match_labels = selector.value("matchLabels", json::object());  // outlives items()
  for (const auto& [k, v] : match_labels.items()) {
    if (!l.contains(k) || l[k] != v) return false;
  }
  for (const auto& e : selector.value("matchExpressions", json::array())) {
    const std::string key = e.value("key", "");
    const std::string op = e.value("operator", "");
    const bool has = l.contains(key);
    const std::string value = has && l[key].is_string() ? l[key].get<std::string>() : "";
    std::set<std::string> values;
    for (const auto& v : e.value("values", json::array())) {
      if (v.is_string()) values.insert(v.get<std::string>());
    }
    bool ok = op == "In"             ? has && values.contains(value)
              : op == "NotIn"        ? !has || !values.contains(value)
              : op == "Exists"       ? has
              : op == "DoesNotExist" ? !has
                                     : false;  // unknown operator: select nothing
    if (!ok) return false;
  }
  return true;
}

bool needs_namespace_labels(const std::vector<const json*>& policies) {
  return std::any_of(policies.begin(), policies.end(), [](const json* p) {
    return !empty_selector(p->value(json::json_pointer("/spec/namespaceSelector"), json()));
  });
}

Resolution resolve_effective(const api::MigrationSpec& spec, const json& pod,
                             const json& namespace_labels, const std::vector<const json*>& policies,
                             const DefaultTimeouts& defaults) {
  std::vector<const json*> sorted = policies;
  std::sort(sorted.begin(), sorted.end(), [](const json* a, const json* b) {
    return a->value(json::json_pointer("/metadata/name"), std::string()) <
           b->value(json::json_pointer("/metadata/name"), std::string());
  });
  const json pod_labels = pod.value(json::json_pointer("/metadata/labels"), json::object());
  const json* policy = nullptr;
  for (const json* p : sorted) {
    if (selector_matches(p->value(json::json_pointer("/spec/podSelector"), json()), pod_labels,
                         false) &&
        selector_matches(p->value(json::json_pointer("/spec/namespaceSelector"), json()),
                         namespace_labels, true)) {
      policy = p;
      break;
    }
  }
  const json ps = policy ? policy->value("spec", json::object()) : json::object();
  const json pt = ps.value("timeouts", json::object());
  Resolution r;
  r.effective.policy =
      policy ? policy->value(json::json_pointer("/metadata/name"), std::string()) : "";
  r.effective.mode = !spec.mode.empty() ? spec.mode : ps.value("mode", std::string("Cold"));
  r.effective.completion_seconds =
      spec.completion_seconds.value_or(pt.value("completionSeconds", defaults.completion_seconds));
  r.effective.progress_seconds =
      spec.progress_seconds.value_or(pt.value("progressSeconds", defaults.progress_seconds));
  r.fallback_mode = ps.value("fallbackMode", std::string());
  return r;
}

}  // namespace ferry::operator_
