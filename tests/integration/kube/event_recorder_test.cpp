// EventRecorder against a real API server: an event is visible to kubectl,
// and repeats fold into one Event with a series count.
#include "kube/event_recorder.h"

#include <gtest/gtest.h>

#include "control_plane.h"
#include "kube_client.h"

namespace ferry::testing {
namespace {

TEST(EventRecorderTest, RepeatsAreAggregatedIntoASeries) {
  auto& cp = ControlPlaneEnvironment::get();
  auto client = client_for(cp);
  auto cm = client->create(
      kube::resources::kConfigMaps, "default",
      {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "evented"}}}});
  ASSERT_TRUE(cm.ok());
  (*cm)["apiVersion"] = "v1";
  (*cm)["kind"] = "ConfigMap";
  kube::EventRecorder recorder(
      *client, {.reporting_controller = "ferry.dev/test", .reporting_instance = "test-1"});
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(recorder
                    .record(*cm, "Warning", "CheckpointFailed", "Checkpoint",
                            "criu dump failed: no space left on device")
                    .ok());
  }
  ASSERT_TRUE(recorder.record(*cm, "Normal", "Migrated", "Restore", "restored on node-2").ok());

  auto events = client->list(kube::resources::kEvents, "default",
                             {.field_selector = "regarding.name=evented"});
  ASSERT_TRUE(events.ok()) << events.status().to_string();
  ASSERT_EQ((*events)["items"].size(), 2u) << (*events).dump(2);
  for (const auto& e : (*events)["items"]) {
    if (e["reason"] == "CheckpointFailed") {
      EXPECT_EQ(e["series"]["count"], 5);
      EXPECT_EQ(e["type"], "Warning");
      EXPECT_EQ(e["regarding"]["uid"], (*cm)["metadata"]["uid"]);
    } else {
      EXPECT_EQ(e["reason"], "Migrated");
      EXPECT_FALSE(e.contains("series"));
    }
  }
  auto shown = cp.kubectl({"events", "--for=configmap/evented"});
  ASSERT_TRUE(shown.ok());
  EXPECT_NE(shown->out.find("CheckpointFailed"), std::string::npos) << shown->out << shown->err;
}

}  // namespace
}  // namespace ferry::testing
