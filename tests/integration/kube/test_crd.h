// A small CRD used by the lib/kube integration tests: namespaced Widgets
// with a validated spec and a status subresource, like Ferry's own CRDs.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "kube/client.h"

namespace ferry::testing {

inline const kube::ResourceType kWidgets{"test.ferry.dev", "v1", "widgets", "Widget", true};

inline nlohmann::json widget_crd() {
  return nlohmann::json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.ferry.dev"},
    "spec": {
      "group": "test.ferry.dev",
      "scope": "Namespaced",
      "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
      "versions": [{
        "name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {
          "type": "object",
          "properties": {
            "spec": {"type": "object", "properties": {
              "size": {"type": "integer", "minimum": 0},
              "color": {"type": "string", "enum": ["red", "green", "blue"]},
              "tags": {"type": "array", "items": {"type": "string"}}
            }},
            "status": {"type": "object", "properties": {
              "phase": {"type": "string"}
            }}
          }
        }}
      }]
    }
  })");
}

// Creates the CRD (if absent) and waits until the API serves it.
inline Status install_widget_crd(kube::Client& client) {
  auto created = client.create(kube::resources::kCustomResourceDefinitions, "", widget_crd());
  if (!created.ok() && created.status().code() != Code::kAlreadyExists) return created.status();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto list = client.list(kWidgets, "default", {});
    if (list.ok()) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status(Code::kDeadlineExceeded, "widgets CRD not served");
}

}  // namespace ferry::testing
