// Client behaviour that a real API server rarely shows on demand: retries
// of 429/5xx with Retry-After, no blind resend of writes, error mapping.
#include "kube/client.h"

#include <gtest/gtest.h>

#include <deque>

namespace ferry::kube {
namespace {

using namespace std::chrono_literals;

// Answers from a script and records what it was asked.
class ScriptedTransport : public HttpTransport {
 public:
  std::deque<Result<HttpResponse>> answers;
  std::vector<HttpRequest> requests;

  Result<HttpResponse> round_trip(const HttpRequest& request) override {
    requests.push_back(request);
    if (answers.empty()) return HttpResponse{.status = 200, .body = "{}"};
    auto a = answers.front();
    answers.pop_front();
    return a;
  }
  Result<HttpResponse> stream_lines(const HttpRequest&,
                                    const std::function<bool(std::string_view)>&,
                                    std::stop_token) override {
    return Status(Code::kUnavailable, "not scripted");
  }
};

struct Fixture {
  ScriptedTransport* transport = nullptr;
  std::vector<std::chrono::milliseconds> sleeps;
  std::unique_ptr<Client> client;

  explicit Fixture(int max_retries = 5) {
    auto t = std::make_unique<ScriptedTransport>();
    transport = t.get();
    auto token = std::make_shared<BearerTokenSource>("s3cret", "");
    client = std::make_unique<Client>(
        std::move(t), token,
        ClientOptions{.max_retries = max_retries,
                      .retry_base = 100ms,
                      .sleep = [this](std::chrono::milliseconds d) { sleeps.push_back(d); }});
  }
};

HttpResponse status_body(int code, const std::string& reason, const std::string& message) {
  return {.status = code,
          .body = json{{"kind", "Status"}, {"reason", reason}, {"message", message}}.dump()};
}

TEST(ClientUnitTest, RetriesTooManyRequestsHonouringRetryAfter) {
  Fixture f;
  HttpResponse busy = status_body(429, "TooManyRequests", "slow down");
  busy.headers["retry-after"] = "3";
  f.transport->answers = {busy, HttpResponse{.status = 200, .body = R"({"ok":true})"}};
  auto r = f.client->get(resources::kPods, "default", "p");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)["ok"], true);
  ASSERT_EQ(f.sleeps.size(), 1u);
  EXPECT_GE(f.sleeps[0], 3000ms);
}

TEST(ClientUnitTest, ServerErrorsBackOffExponentiallyThenGiveUp) {
  Fixture f(3);
  for (int i = 0; i < 4; ++i) {
    f.transport->answers.push_back(status_body(503, "ServiceUnavailable", "down"));
  }
  auto r = f.client->get(resources::kPods, "default", "p");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(f.transport->requests.size(), 4u);  // first try + 3 retries
  ASSERT_EQ(f.sleeps.size(), 3u);
  EXPECT_GE(f.sleeps[0], 100ms);
  EXPECT_GE(f.sleeps[1], 200ms);
  EXPECT_GE(f.sleeps[2], 400ms);
}

TEST(ClientUnitTest, WritesAreNotResentWhenTheServerMayHaveActed) {
  Fixture f;
  f.transport->answers = {Status(Code::kUnavailable, "connection reset by peer")};
  auto r = f.client->create(resources::kPods, "default", {{"metadata", {{"name", "p"}}}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(f.transport->requests.size(), 1u);
}

TEST(ClientUnitTest, WritesThatNeverLeftAreResent) {
  Fixture f;
  f.transport->answers = {
      Status(Code::kUnavailable, "Failed to write request body", std::string(kRequestNotSent))};
  auto r = f.client->create(resources::kPods, "default", {{"metadata", {{"name", "p"}}}});
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(f.transport->requests.size(), 2u);
}

TEST(ClientUnitTest, ApiStatusMapsToCodesAndKeepsReasonAndMessage) {
  struct Case {
    int http;
    std::string reason;
    Code code;
  };
  for (const auto& c : std::vector<Case>{{404, "NotFound", Code::kNotFound},
                                         {409, "AlreadyExists", Code::kAlreadyExists},
                                         {409, "Conflict", Code::kConflict},
                                         {410, "Expired", Code::kGone},
                                         {422, "Invalid", Code::kInvalidArgument},
                                         {403, "Forbidden", Code::kPermissionDenied}}) {
    Status s = status_from_response(status_body(c.http, c.reason, "the server's words"));
    EXPECT_EQ(s.code(), c.code) << c.http << " " << c.reason;
    EXPECT_EQ(s.reason(), c.reason);
    EXPECT_EQ(s.message(), "the server's words");
  }
  Status plain = status_from_response({.status = 502, .body = "<html>bad gateway</html>"});
  EXPECT_EQ(plain.code(), Code::kUnavailable);
  EXPECT_NE(plain.message().find("HTTP 502"), std::string::npos);
}

TEST(ClientUnitTest, SendsBearerTokenAndContentTypes) {
  Fixture f;
  (void)f.client->patch(resources::kPods, "ns", "p", PatchType::kJson, json::array());
  (void)f.client->patch(resources::kPods, "ns", "p", PatchType::kApply, json::object(),
                        {.field_manager = "ferry", .force = true});
  ASSERT_EQ(f.transport->requests.size(), 2u);
  auto header = [](const HttpRequest& r, const std::string& name) {
    for (const auto& [k, v] : r.headers) {
      if (k == name) return v;
    }
    return std::string();
  };
  EXPECT_EQ(header(f.transport->requests[0], "Authorization"), "Bearer s3cret");
  EXPECT_EQ(header(f.transport->requests[0], "Content-Type"), "application/json-patch+json");
  EXPECT_EQ(header(f.transport->requests[1], "Content-Type"), "application/apply-patch+yaml");
  EXPECT_EQ(f.transport->requests[1].target,
            "/api/v1/namespaces/ns/pods/p?force=true&fieldManager=ferry");
}

TEST(ClientUnitTest, ApplyWithoutFieldManagerIsRefusedLocally) {
  Fixture f;
  auto r = f.client->patch(resources::kPods, "ns", "p", PatchType::kApply, json::object());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(f.transport->requests.empty());
}

TEST(ResourceTypeTest, Paths) {
  EXPECT_EQ(resources::kPods.path("ns", "p", "status"), "/api/v1/namespaces/ns/pods/p/status");
  EXPECT_EQ(resources::kNodes.path("ignored", "n1"), "/api/v1/nodes/n1");
  EXPECT_EQ(resources::kLeases.path("kube-system"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
  EXPECT_EQ(query_escape("app=x,tier!=db"), "app%3Dx%2Ctier%21%3Ddb");
}

}  // namespace
}  // namespace ferry::kube
