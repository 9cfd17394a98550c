// The settings a Migration runs with (status.effective): its own spec
// where it says something, else the first MigrationPolicy (by name) that
// selects its pod, else the defaults (Cold, 600 s, 120 s). A policy selects
// a pod when its podSelector (a label selector; empty selects none) matches
// the pod's labels and its namespaceSelector (empty selects all) matches
// the namespace's labels. Pure, so every rule is unit-tested.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/migration.h"

namespace ferry::operator_ {

// A Kubernetes label selector (matchLabels, matchExpressions with In,
// NotIn, Exists, DoesNotExist) against `labels`. An empty selector matches
// when `empty_matches_all`.
bool selector_matches(const nlohmann::json& selector, const nlohmann::json& labels,
                      bool empty_matches_all);

struct Resolution {
  api::Effective effective;
  std::string fallback_mode;  // the policy's fallbackMode, if any
};

// `namespace_labels` are the labels of the pod's namespace; `policies` the
// MigrationPolicy objects, in any order.
// The timeouts when neither the Migration nor a policy sets them (the
// operator's --default-*-seconds flags).
struct DefaultTimeouts {
  int64_t completion_seconds = api::kDefaultCompletionSeconds;
  int64_t progress_seconds = api::kDefaultProgressSeconds;
};

Resolution resolve_effective(const api::MigrationSpec& spec, const nlohmann::json& pod,
                             const nlohmann::json& namespace_labels,
                             const std::vector<const nlohmann::json*>& policies,
                             const DefaultTimeouts& defaults = {});

// True when some policy has a non-empty namespaceSelector (only then are
// namespace labels worth fetching).
bool needs_namespace_labels(const std::vector<const nlohmann::json*>& policies);

}  // namespace ferry::operator_
