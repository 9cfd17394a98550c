// Names a Kubernetes resource type (group, version, plural) and builds its
// REST paths. Objects themselves are handled as JSON (nlohmann::json), the
// C++ equivalent of client-go's unstructured objects; typed views of our
// own CRDs live in lib/api.
#pragma once

#include <string>
#include <string_view>

namespace ferry::kube {

struct ResourceType {
  std::string group;  // "" for the core group
  std::string version;
  std::string plural;
  std::string kind;
  bool namespaced = true;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  // /api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]
  std::string path(std::string_view ns = {}, std::string_view name = {},
                   std::string_view subresource = {}) const;
};

namespace resources {
inline const ResourceType kNamespaces{"", "v1", "namespaces", "Namespace", false};
inline const ResourceType kPods{"", "v1", "pods", "Pod", true};
inline const ResourceType kNodes{"", "v1", "nodes", "Node", false};
inline const ResourceType kConfigMaps{"", "v1", "configmaps", "ConfigMap", true};
inline const ResourceType kSecrets{"", "v1", "secrets", "Secret", true};
inline const ResourceType kServices{"", "v1", "services", "Service", true};
inline const ResourceType kLeases{"coordination.k8s.io", "v1", "leases", "Lease", true};
inline const ResourceType kEvents{"events.k8s.io", "v1", "events", "Event", true};
inline const ResourceType kCustomResourceDefinitions{
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false};
}  // namespace resources

// Percent-encodes a query parameter value (label selectors contain '=', ',', '!').
std::string query_escape(std::string_view value);

}  // namespace ferry::kube
