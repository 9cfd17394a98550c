// The admission webhook HTTPS server (lib/webhook/webhook_server.h) on a
// loopback port, called through lib/kube's HTTP client as the API server
// would call it: an AdmissionReview in, the handler's response out with the
// request's uid; unknown paths, wrong methods and bodies that are not
// reviews are HTTP errors; a throwing handler is a denial with code 500.
// TLS: nothing is served before a certificate is loaded, a rotated
// certificate is presented from the next connection on without a restart,
// and ServingCertificate refuses garbage and mismatched keys. A client that
// hangs up mid-request does not take the server down.
#include "webhook/webhook_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kube/http.h"
#include "loopback_client.h"
#include "pki/pki.h"

namespace ferry::webhook {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct Issued {
  pki::Certificate ca;
  pki::Certificate leaf;
};

// A CA and a serving certificate for 127.0.0.1 and localhost.
Issued issue(const std::string& ca_name) {
  auto ca = pki::make_ca(ca_name, std::chrono::hours(1));
  EXPECT_TRUE(ca.ok()) << ca.status().to_string();
  if (!ca.ok()) return {};
  auto leaf = pki::sign(*ca, {.common_name = "webhook",
                              .dns_names = {"localhost"},
                              .ip_addresses = {"127.0.0.1"},
                              .usage = pki::Usage::kServer,
                              .validity = std::chrono::hours(1)});
  EXPECT_TRUE(leaf.ok()) << leaf.status().to_string();
  if (!leaf.ok()) return {};
  return {*ca, *leaf};
}

json review(const std::string& uid) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", uid},
            {"operation", "CREATE"},
            {"namespace", "shop"},
            {"userInfo", {{"username", "alice"}}},
            {"object", {{"metadata", {{"name", "web"}}}}}}}};
}

class WebhookServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    first_ = issue("first-ca");
    ASSERT_FALSE(first_.leaf.cert_pem.empty());
  }

  // Starts the server on a loopback port the kernel picks.
  void start(std::map<std::string, AdmissionHandler> handlers) {
    auto server = WebhookServer::start("127.0.0.1:0", certificate_, std::move(handlers));
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    server_ = std::move(server).value();
    port_ = server_->port();
    ASSERT_GT(port_, 0);
  }

  // One request over a new TLS connection (a new transport each time) from
  // a client that trusts only `ca_pem`.
  Result<kube::HttpResponse> call(const std::string& method, const std::string& path,
                                  const std::string& body, const std::string& ca_pem) {
    auto transport = kube::make_cpprest_transport("https://127.0.0.1:" + std::to_string(port_),
                                                  kube::TlsConfig{.ca_pem = ca_pem});
    if (!transport.ok()) return transport.status();
    return (*transport)
        ->round_trip({.method = method, .target = path, .body = body, .timeout = 10s});
  }

  Result<kube::HttpResponse> post(const std::string& path, const std::string& body) {
    return call("POST", path, body, first_.ca.cert_pem);
  }

  static json body_of(const Result<kube::HttpResponse>& r) {
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return nullptr;
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body, nullptr, false);
  }

  Issued first_;
  std::shared_ptr<ServingCertificate> certificate_ = std::make_shared<ServingCertificate>();
  std::unique_ptr<WebhookServer> server_;
  int port_ = 0;
};

TEST_F(WebhookServerTest, AnswersAReviewWithTheHandlersResponseAndTheRequestUid) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  json seen;
  start({{"/guard-pods",
          [&](const json& request) {
            seen = request;
            return allow();
          }},
         {"/steer-pods", [](const json&) {
            return allow_with_patch(
                json::parse(R"([{"op":"add","path":"/spec/runtimeClassName","value":"ferry"}])"));
          }}});
  json got = body_of(post("/guard-pods", review("0b7c-uid").dump()));
  EXPECT_EQ(got["apiVersion"], "admission.k8s.io/v1") << got.dump();
  EXPECT_EQ(got["kind"], "AdmissionReview");
  EXPECT_EQ(got["response"]["uid"], "0b7c-uid");
  EXPECT_EQ(got["response"]["allowed"], true);
  EXPECT_EQ(seen, review("0b7c-uid")["request"]) << "the handler gets the review's request";

  json patched = body_of(post("/steer-pods", review("second").dump()));
  EXPECT_EQ(patched["response"]["uid"], "second");
  EXPECT_EQ(patched["response"]["allowed"], true);
  EXPECT_EQ(patched["response"]["patchType"], "JSONPatch");
  EXPECT_FALSE(patched["response"]["patch"].get<std::string>().empty());
}

TEST_F(WebhookServerTest, ADenialKeepsItsStatus) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  start({{"/guard-pods", [](const json&) { return deny(403, "Forbidden", "not you"); }}});
  json got = body_of(post("/guard-pods", review("u1").dump()));
  EXPECT_EQ(got["response"],
            json({{"uid", "u1"},
                  {"allowed", false},
                  {"status", {{"code", 403}, {"reason", "Forbidden"}, {"message", "not you"}}}}));
}

TEST_F(WebhookServerTest, UnknownPathWrongMethodAndBadBodiesAreHttpErrors) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  std::atomic<int> calls = 0;
  start({{"/guard-pods", [&](const json&) {
            ++calls;
            return allow();
          }}});
  auto unknown = post("/nope", review("u").dump());
  ASSERT_TRUE(unknown.ok()) << unknown.status().to_string();
  EXPECT_EQ(unknown->status, 404);
  auto get = call("GET", "/guard-pods", "", first_.ca.cert_pem);
  ASSERT_TRUE(get.ok()) << get.status().to_string();
  EXPECT_EQ(get->status, 405);
  for (const std::string body :
       {"not json {", "", "[1,2]", R"({"kind":"AdmissionReview"})", R"({"request":"a string"})"}) {
    auto bad = post("/guard-pods", body);
    ASSERT_TRUE(bad.ok()) << bad.status().to_string();
    EXPECT_EQ(bad->status, 400) << "body: " << body;
  }
  EXPECT_EQ(calls.load(), 0) << "no handler saw anything";
}

TEST_F(WebhookServerTest, AThrowingHandlerIsADenialWithCode500) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  start({{"/guard-pods",
          [](const json& request) -> json {
            // A handler bug: a type error reading the request.
            return {{"allowed", request.at("object").at("spec").at("x").get<bool>()}};
          }},
         {"/steer-pods", [](const json&) -> json { throw std::runtime_error("boom"); }}});
  for (const char* path : {"/guard-pods", "/steer-pods"}) {
    json got = body_of(post(path, review("u-500").dump()));
    EXPECT_EQ(got["response"]["uid"], "u-500") << path;
    EXPECT_EQ(got["response"]["allowed"], false) << path;
    EXPECT_EQ(got["response"]["status"]["code"], 500) << path;
    EXPECT_NE(got["response"]["status"]["message"].get<std::string>().find("webhook failed"),
              std::string::npos)
        << got.dump();
  }
  // Still serving.
  EXPECT_EQ(body_of(post("/steer-pods", review("after").dump()))["response"]["uid"], "after");
}

TEST_F(WebhookServerTest, NothingIsServedBeforeACertificateIsLoaded) {
  start({{"/guard-pods", [](const json&) { return allow(); }}});
  EXPECT_FALSE(certificate_->loaded());
  auto early = post("/guard-pods", review("u").dump());
  EXPECT_FALSE(early.ok()) << "a handshake without a certificate must fail, got HTTP "
                           << early->status;
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  EXPECT_TRUE(certificate_->loaded());
  EXPECT_EQ(body_of(post("/guard-pods", review("late").dump()))["response"]["uid"], "late");
}

TEST_F(WebhookServerTest, ARotatedCertificateServesTheNextConnectionWithoutARestart) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  start({{"/guard-pods", [](const json&) { return allow(); }}});
  Issued second = issue("second-ca");
  const std::string body = review("rot").dump();

  auto before = call("POST", "/guard-pods", body, second.ca.cert_pem);
  EXPECT_FALSE(before.ok()) << "a client trusting only the second CA must refuse the first";
  ASSERT_TRUE(call("POST", "/guard-pods", body, first_.ca.cert_pem).ok());

  ASSERT_TRUE(certificate_->set(second.leaf.cert_pem, second.leaf.key_pem).ok());
  EXPECT_EQ(certificate_->cert_pem(), second.leaf.cert_pem);
  json after = body_of(call("POST", "/guard-pods", body, second.ca.cert_pem));
  EXPECT_EQ(after["response"]["uid"], "rot");
  EXPECT_FALSE(call("POST", "/guard-pods", body, first_.ca.cert_pem).ok())
      << "the first certificate is no longer presented";

  // A renewal under the same CA, as the operator does it.
  auto renewed = pki::sign(
      second.ca,
      {.common_name = "webhook", .ip_addresses = {"127.0.0.1"}, .validity = std::chrono::hours(2)});
  ASSERT_TRUE(renewed.ok());
  ASSERT_TRUE(certificate_->set(renewed->cert_pem, renewed->key_pem).ok());
  EXPECT_TRUE(call("POST", "/guard-pods", body, second.ca.cert_pem).ok());
}

TEST_F(WebhookServerTest, ServesConcurrentCallers) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  start({{"/guard-pods", [](const json& r) { return deny(400, "Echo", r.value("uid", "")); }}});
  std::atomic<int> good = 0;
  std::vector<std::jthread> callers;
  callers.reserve(8);
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const std::string uid = std::to_string(t) + "-" + std::to_string(i);
        auto r = post("/guard-pods", review(uid).dump());
        if (!r.ok() || r->status != 200) continue;
        json got = json::parse(r->body, nullptr, false);
        if (!got.is_discarded() && got["response"]["uid"] == uid &&
            got["response"]["status"]["message"] == uid) {
          ++good;
        }
      }
    });
  }
  callers.clear();  // joins
  EXPECT_EQ(good.load(), 40);
}

// One client that writes `raw`, waits `linger` (so the server has
// dispatched the request and waits for the rest of its body), and hangs up
// without reading an answer.
void send_and_hang_up(int port, const std::string& raw,
                      std::chrono::milliseconds linger = std::chrono::milliseconds(0)) {
  const auto visit = testing::tls_hang_up(port, raw, linger);
  ASSERT_TRUE(visit.connected);
  EXPECT_TRUE(visit.handshake);
  EXPECT_TRUE(visit.wrote);
}

TEST_F(WebhookServerTest, AClientHangingUpMidRequestDoesNotTakeTheServerDown) {
  ASSERT_TRUE(certificate_->set(first_.leaf.cert_pem, first_.leaf.key_pem).ok());
  start({{"/guard-pods", [](const json&) { return allow(); }}});
  const std::string whole = review("gone").dump();
  for (int i = 0; i < 5; ++i) {
    // A body cut short: reading it fails, at once or while the request
    // waits for the rest.
    const std::string cut =
        "POST /guard-pods HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(whole.size() + 100) + "\r\n\r\n" + whole;
    send_and_hang_up(port_, cut);
    send_and_hang_up(port_, cut, 200ms);
    // A whole request whose answer has nobody to go to.
    send_and_hang_up(port_,
                     "POST /guard-pods HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: " +
                         std::to_string(whole.size()) + "\r\n\r\n" + whole);
  }
  // The failed reads and writes are settled by the server's threads after
  // the hang-ups; keep calling for a while so a crash there would show.
  auto until = std::chrono::steady_clock::now() + 2s;
  int answered = 0;
  while (std::chrono::steady_clock::now() < until) {
    json got = body_of(post("/guard-pods", review("still").dump()));
    answered += got.is_object() && got["response"]["uid"] == "still";
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GT(answered, 0);
}

TEST(ServingCertificateTest, RefusesGarbageAndAKeyOfAnotherCertificate) {
  Issued a = issue("ca-a");
  Issued b = issue("ca-b");
  ServingCertificate cert;
  for (const auto& [crt, key] : std::vector<std::pair<std::string, std::string>>{
           {"", ""},
           {"garbage", "garbage"},
           {a.leaf.cert_pem, ""},
           {"", a.leaf.key_pem},
           {a.leaf.key_pem, a.leaf.cert_pem},  // swapped
       }) {
    Status s = cert.set(crt, key);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << crt.size() << "/" << key.size();
    EXPECT_EQ(s.reason(), "CertificateInvalid");
  }
  EXPECT_FALSE(cert.loaded());

  Status mismatch = cert.set(a.leaf.cert_pem, b.leaf.key_pem);
  EXPECT_EQ(mismatch.code(), Code::kInvalidArgument);
  EXPECT_EQ(mismatch.reason(), "CertificateInvalid");
  EXPECT_NE(mismatch.message().find("does not match"), std::string::npos) << mismatch.message();
  EXPECT_FALSE(cert.loaded());

  ASSERT_TRUE(cert.set(a.leaf.cert_pem, a.leaf.key_pem).ok());
  // A refused set() keeps what was loaded.
  EXPECT_FALSE(cert.set(b.leaf.cert_pem, a.leaf.key_pem).ok());
  EXPECT_FALSE(cert.set("garbage", "garbage").ok());
  EXPECT_TRUE(cert.loaded());
  EXPECT_EQ(cert.cert_pem(), a.leaf.cert_pem);
}

TEST(ServingCertificateTest, AcceptsALeafFollowedByItsChain) {
  Issued a = issue("ca-a");
  ServingCertificate cert;
  ASSERT_TRUE(cert.set(a.leaf.cert_pem + a.ca.cert_pem, a.leaf.key_pem).ok());
  auto loaded = cert.current();
  ASSERT_NE(loaded, nullptr);
}

TEST(ResponsesTest, AllowDenyAndPatch) {
  EXPECT_EQ(allow(), json({{"allowed", true}}));
  EXPECT_EQ(allow_with_patch(json::array()), allow()) << "an empty patch is a plain allow";
  json p = allow_with_patch(json::parse(R"([{"op":"remove","path":"/a"}])"));
  EXPECT_EQ(p["allowed"], true);
  EXPECT_EQ(p["patchType"], "JSONPatch");
  EXPECT_EQ(p["patch"], "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL2EifV0=");  // base64 of the array
  EXPECT_EQ(deny(403, "Forbidden", "no"),
            json({{"allowed", false},
                  {"status", {{"code", 403}, {"reason", "Forbidden"}, {"message", "no"}}}}));
}

}  // namespace
}  // namespace ferry::webhook
