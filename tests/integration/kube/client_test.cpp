// lib/kube Client against a real kube-apiserver: CRUD, each patch type, the
// status subresource, delete preconditions, pagination, verbatim validation
// errors, and optimistic concurrency without lost updates.
#include "kube/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "control_plane.h"
#include "kube_client.h"
#include "test_crd.h"

namespace ferry::testing {
namespace {

using kube::json;
using kube::PatchType;
namespace res = kube::resources;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = client_for(ControlPlaneEnvironment::get());
    ASSERT_NE(client_, nullptr);
    ASSERT_TRUE(install_widget_crd(*client_).ok());
  }
  static json widget(const std::string& name, int size) {
    return {{"apiVersion", "test.ferry.dev/v1"},
            {"kind", "Widget"},
            {"metadata", {{"name", name}}},
            {"spec", {{"size", size}, {"color", "red"}}}};
  }
  std::unique_ptr<kube::Client> client_;
};

TEST_F(ClientTest, CustomResourceLifecycle) {
  auto created = client_->create(kWidgets, "default", widget("lifecycle", 1));
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  EXPECT_FALSE((*created)["metadata"]["uid"].get<std::string>().empty());

  // PUT update of the spec.
  json obj = *created;
  obj["spec"]["size"] = 2;
  auto updated = client_->update(kWidgets, "default", obj);
  ASSERT_TRUE(updated.ok()) << updated.status().to_string();
  EXPECT_EQ((*updated)["spec"]["size"], 2);

  // Merge patch.
  auto merged = client_->patch(kWidgets, "default", "lifecycle", PatchType::kMerge,
                               {{"spec", {{"color", "green"}}}});
  ASSERT_TRUE(merged.ok()) << merged.status().to_string();
  EXPECT_EQ((*merged)["spec"]["color"], "green");
  EXPECT_EQ((*merged)["spec"]["size"], 2);

  // JSON patch (RFC 6902) with a test op.
  auto jp = client_->patch(kWidgets, "default", "lifecycle", PatchType::kJson,
                           json::parse(R"([{"op":"test","path":"/spec/size","value":2},
                                           {"op":"replace","path":"/spec/size","value":3}])"));
  ASSERT_TRUE(jp.ok()) << jp.status().to_string();
  EXPECT_EQ((*jp)["spec"]["size"], 3);

  // Server-side apply owns spec.tags for our field manager.
  json applied_cfg = {{"apiVersion", "test.ferry.dev/v1"},
                      {"kind", "Widget"},
                      {"metadata", {{"name", "lifecycle"}}},
                      {"spec", {{"tags", {"a", "b"}}}}};
  auto applied = client_->patch(kWidgets, "default", "lifecycle", PatchType::kApply, applied_cfg,
                                {.field_manager = "ferry-test", .force = true});
  ASSERT_TRUE(applied.ok()) << applied.status().to_string();
  EXPECT_EQ((*applied)["spec"]["tags"], json({"a", "b"}));
  bool managed = false;
  for (const auto& mf : (*applied)["metadata"]["managedFields"]) {
    managed |= mf["manager"] == "ferry-test" && mf["operation"] == "Apply";
  }
  EXPECT_TRUE(managed);

  // Status goes only through the status subresource.
  json with_status = *applied;
  with_status["status"] = {{"phase", "Ready"}};
  auto st = client_->update_status(kWidgets, "default", with_status);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  EXPECT_EQ((*st)["status"]["phase"], "Ready");
  json main_put = *st;
  main_put["status"]["phase"] = "Ignored";
  auto after_put = client_->update(kWidgets, "default", main_put);
  ASSERT_TRUE(after_put.ok());
  EXPECT_EQ((*after_put)["status"]["phase"], "Ready");
  auto status_patch = client_->patch(kWidgets, "default", "lifecycle", PatchType::kMerge,
                                     {{"status", {{"phase", "Done"}}}}, {.subresource = "status"});
  ASSERT_TRUE(status_patch.ok());
  EXPECT_EQ((*status_patch)["status"]["phase"], "Done");

  // Delete with a wrong uid precondition is refused; with the right one it works.
  Status wrong = client_->remove(kWidgets, "default", "lifecycle",
                                 {.precondition_uid = std::string("not-the-uid")});
  EXPECT_EQ(wrong.code(), Code::kConflict) << wrong.to_string();
  std::string uid = (*created)["metadata"]["uid"];
  EXPECT_TRUE(client_->remove(kWidgets, "default", "lifecycle", {.precondition_uid = uid}).ok());
  auto gone = client_->get(kWidgets, "default", "lifecycle");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  EXPECT_EQ(gone.status().reason(), "NotFound");
}

TEST_F(ClientTest, StrategicMergePatchOnBuiltInType) {
  json cm = {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", {{"name", "smp"}, {"labels", {{"a", "1"}}}}},
             {"data", {{"k", "v"}}}};
  ASSERT_TRUE(client_->create(res::kConfigMaps, "default", cm).ok());
  auto patched = client_->patch(res::kConfigMaps, "default", "smp", PatchType::kStrategicMerge,
                                {{"metadata", {{"labels", {{"b", "2"}}}}}});
  ASSERT_TRUE(patched.ok()) << patched.status().to_string();
  EXPECT_EQ((*patched)["metadata"]["labels"], json({{"a", "1"}, {"b", "2"}}));
  // Strategic merge is not defined for custom resources: the API says so.
  ASSERT_TRUE(client_->create(kWidgets, "default", widget("no-smp", 1)).ok());
  auto refused = client_->patch(kWidgets, "default", "no-smp", PatchType::kStrategicMerge,
                                {{"spec", {{"size", 2}}}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().reason(), "UnsupportedMediaType");
}

TEST_F(ClientTest, ValidationErrorsAreTheServersWords) {
  // One invalid field: the server's message is deterministic, compare it
  // byte for byte with what the server says to a plain HTTP client (curl).
  json bad = widget("bad", 1);
  bad["spec"]["color"] = "purple";
  auto r = client_->create(kWidgets, "default", bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().reason(), "Invalid");
  auto& cp = ControlPlaneEnvironment::get();
  auto raw = process::run(
      {"curl", "-s", "--cacert", cp.ca_cert_path(), "--cert", cp.admin_cert_path(), "--key",
       cp.admin_key_path(), "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
       "@-", cp.server() + kWidgets.path("default")},
      std::chrono::seconds(30), bad.dump());
  ASSERT_TRUE(raw.ok());
  auto server_status = json::parse(raw->out, nullptr, false);
  ASSERT_FALSE(server_status.is_discarded()) << raw->out << raw->err;
  EXPECT_EQ(r.status().message(), server_status["message"].get<std::string>());
  // Several invalid fields: all are reported (the server orders them freely).
  bad["spec"]["size"] = "big";
  auto both = client_->create(kWidgets, "default", bad);
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("spec.size"), std::string::npos);
  EXPECT_NE(both.status().message().find("spec.color"), std::string::npos);
}

TEST_F(ClientTest, CreateTwiceIsAlreadyExists) {
  ASSERT_TRUE(client_->create(kWidgets, "default", widget("twice", 1)).ok());
  auto again = client_->create(kWidgets, "default", widget("twice", 1));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
}

TEST_F(ClientTest, PaginationReturnsEveryItemOnce) {
  ASSERT_TRUE(client_->create(res::kNamespaces, "", {{"metadata", {{"name", "paging"}}}}).ok());
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(client_->create(kWidgets, "paging", widget("w" + std::to_string(i), i)).ok());
  }
  auto page = client_->list(kWidgets, "paging", {.limit = 10});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ((*page)["items"].size(), 10u);
  EXPECT_FALSE((*page)["metadata"].value("continue", "").empty());
  auto all = client_->list_all(kWidgets, "paging", {.limit = 10});
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  std::set<std::string> names;
  for (const auto& item : (*all)["items"]) names.insert(item["metadata"]["name"]);
  EXPECT_EQ(names.size(), 25u);
  EXPECT_EQ((*all)["items"].size(), 25u);
  auto selected = client_->list_all(kWidgets, "paging", {.field_selector = "metadata.name=w7"});
  ASSERT_TRUE(selected.ok());
  ASSERT_EQ((*selected)["items"].size(), 1u);
}

TEST_F(ClientTest, ConcurrentUpdatesConflictAndRetryWithoutLoss) {
  json cm = {{"apiVersion", "v1"},
             {"kind", "ConfigMap"},
             {"metadata", {{"name", "counter"}}},
             {"data", {{"n", "0"}}}};
  ASSERT_TRUE(client_->create(res::kConfigMaps, "default", cm).ok());
  constexpr int kWriters = 4, kIncrements = 15;
  std::atomic<int> conflicts{0};
  std::vector<std::thread> writers;
  writers.reserve(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&] {
      auto client = client_for(ControlPlaneEnvironment::get());
      for (int i = 0; i < kIncrements; ++i) {
        for (;;) {  // read-modify-write, retried on Conflict
          auto cur = client->get(res::kConfigMaps, "default", "counter");
          ASSERT_TRUE(cur.ok());
          json next = *cur;
          next["data"]["n"] = std::to_string(std::stoi(next["data"]["n"].get<std::string>()) + 1);
          auto r = client->update(res::kConfigMaps, "default", next);
          if (r.ok()) break;
          ASSERT_EQ(r.status().code(), Code::kConflict) << r.status().to_string();
          ++conflicts;
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  auto final_cm = client_->get(res::kConfigMaps, "default", "counter");
  ASSERT_TRUE(final_cm.ok());
  EXPECT_EQ((*final_cm)["data"]["n"], std::to_string(kWriters * kIncrements));
  std::printf("concurrent updates: %d conflicts retried\n", conflicts.load());
  // A stale write is refused, never applied.
  json stale = *final_cm;
  stale["metadata"]["resourceVersion"] = "1";
  auto refused = client_->update(res::kConfigMaps, "default", stale);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kConflict);
}

TEST_F(ClientTest, WatchStreamsEventsFromAResourceVersion) {
  auto list = client_->list(kWidgets, "default", {});
  ASSERT_TRUE(list.ok());
  std::string rv = (*list)["metadata"]["resourceVersion"];
  std::thread writer([&] {
    auto c = client_for(ControlPlaneEnvironment::get());
    ASSERT_TRUE(c->create(kWidgets, "default", widget("watched", 1)).ok());
    ASSERT_TRUE(c->remove(kWidgets, "default", "watched").ok());
  });
  std::vector<std::string> seen;
  std::stop_source stop;
  Status s = client_->watch(
      kWidgets, "default", {.resource_version = rv, .timeout = std::chrono::seconds(20)},
      [&](const kube::WatchEvent& ev) {
        if (ev.type == "BOOKMARK") return true;
        if (ev.object["metadata"]["name"] == "watched") seen.push_back(ev.type);
        return !(ev.type == "DELETED" && ev.object["metadata"]["name"] == "watched");
      },
      stop.get_token());
  writer.join();
  EXPECT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED", "DELETED"}));
}

TEST_F(ClientTest, NonResourcePaths) {
  auto r = client_->get_raw("/readyz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok");
}

}  // namespace
}  // namespace ferry::testing
