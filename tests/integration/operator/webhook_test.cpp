// The pod admission webhook end to end through a real API server: the
// operator's managed TLS (WebhookCertificates) creates the CA and serving
// certificate in a Secret, loads it into the WebhookServer and injects the
// CA into a MutatingWebhookConfiguration whose clientConfig.url points the
// API server at the server on https://localhost:<port>; a second sync
// changes nothing; a certificate due for renewal, or deleted from the
// Secret, or whose key does not match it, is reissued under the same CA; a
// CA coming due is renewed next to the old one before the serving
// certificate moves to it. Through the API server, guard refuses a
// restore-annotated pod from anyone but the operator user (with the
// webhook's message), lets ordinary pods through, and keeps the annotation
// immutable; pods created every 100 ms while the serving certificate or the
// CA rotates never fail on TLS.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "admission/pod_admission.h"
#include "admission/webhook_certs.h"
#include "control_plane.h"
#include "encoding/base64.h"
#include "kube_client.h"
#include "pki/pki.h"
#include "wait_until.h"
#include "webhook/webhook_server.h"

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;
using kube::json;

constexpr char kSystemNs[] = "ferry-webhook-system";
constexpr char kTenantNs[] = "tenant";
constexpr char kSecret[] = "ferry-webhook-tls";
constexpr char kConfiguration[] = "ferry-webhook-test";
constexpr char kTestLabel[] = "ferry.dev/webhook-test";

std::string data_of(const json& secret, const std::string& key) {
  auto v = secret.value(json::json_pointer("/data/" + key), std::string());
  auto decoded = encoding::base64_decode(v);
  return decoded.ok() ? *decoded : std::string();
}

// The leaf certificate a new TLS connection to 127.0.0.1:`port` is shown
// (PEM), without verifying it.
std::string served_certificate(int port) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new_ssl_connect(ctx.get()), BIO_free_all);
  const std::string target = "127.0.0.1:" + std::to_string(port);
  BIO_set_conn_hostname(bio.get(), target.c_str());
  if (BIO_do_connect(bio.get()) != 1 || BIO_do_handshake(bio.get()) != 1) return {};
  SSL* ssl = nullptr;
  BIO_get_ssl(bio.get(), &ssl);
  X509* peer = SSL_get1_peer_certificate(ssl);
  if (peer == nullptr) return {};
  std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(out.get(), peer);
  X509_free(peer);
  char* data = nullptr;
  long size = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// The PEM certificates of a bundle, in order.
std::vector<std::string> certificates_in(const std::string& bundle) {
  static const std::string kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  for (size_t at = bundle.find("-----BEGIN"); at != std::string::npos;
       at = bundle.find("-----BEGIN", at + 1)) {
    size_t end = bundle.find(kEnd, at);
    if (end == std::string::npos) break;
    out.push_back(bundle.substr(at, end + kEnd.size() - at) + "\n");
  }
  return out;
}

// Creates a pod through the API server (and so through the webhook) every
// 100 ms until stopped, with a client that does not retry, so a failed
// webhook call (HTTP 500) shows as a failure.
class PodCreator {
 public:
  PodCreator(const std::string& prefix, const std::string& ns) {
    kube::ClientOptions no_retries;
    no_retries.max_retries = 0;
    client_ = client_for(ControlPlaneEnvironment::get(), no_retries);
    thread_ = std::jthread([this, prefix, ns](std::stop_token stop) {
      for (int i = 0; client_ && !stop.stop_requested(); ++i) {
        json p = {
            {"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", prefix + std::to_string(i)}, {"namespace", ns}}},
            {"spec", {{"containers", {{{"name", "app"}, {"image", "ferry.local/app:dev"}}}}}}};
        auto r = client_->create(kube::resources::kPods, ns, p);
        if (r.ok()) {
          ++created_;
        } else {
          std::lock_guard lock(mu_);
          failures_.push_back("create #" + std::to_string(i) + ": " + r.status().to_string());
        }
        std::this_thread::sleep_for(100ms);
      }
    });
  }
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  int created() const { return created_.load(); }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }

 private:
  std::unique_ptr<kube::Client> client_;
  std::atomic<int> created_ = 0;
  std::mutex mu_;
  std::vector<std::string> failures_;
  std::jthread thread_;
};

class WebhookTest : public ::testing::Test {
 protected:
  // One webhook server for the suite, serving guard with whatever operator
  // user the running test configured.
  static void SetUpTestSuite() {
    auto& cp = ControlPlaneEnvironment::get();
    client_ = client_for(cp);
    ASSERT_NE(client_, nullptr);
    for (const std::string ns : {kSystemNs, kTenantNs}) {
      json object = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}};
      if (ns == kTenantNs) object["metadata"]["labels"] = {{kTestLabel, "true"}};
      auto r = client_->create(kube::resources::kNamespaces, "", object);
      ASSERT_TRUE(r.ok()) << r.status().to_string();
    }
    serving_ = std::make_shared<webhook::ServingCertificate>();
    auto server = webhook::WebhookServer::start(
        "127.0.0.1:0", serving_,
        {{"/guard-pods", [](const json& request) { return guard(request); }}});
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    server_ = std::move(server).value();
    port_ = server_->port();
    // Created before the first sync, as the chart does: the operator fills
    // in caBundle. Only the test namespace's pods go through it, and a
    // webhook that cannot be called fails the request (to see TLS errors).
    json configuration = {
        {"apiVersion", "admissionregistration.k8s.io/v1"},
        {"kind", "MutatingWebhookConfiguration"},
        {"metadata", {{"name", kConfiguration}}},
        {"webhooks",
         {{{"name", "guard.pods.ferry.dev"},
           {"clientConfig",
            {{"url", "https://localhost:" + std::to_string(port_) + "/guard-pods"}}},
           {"rules",
            {{{"apiGroups", {""}},
              {"apiVersions", {"v1"}},
              {"operations", {"CREATE", "UPDATE"}},
              {"resources", {"pods"}},
              {"scope", "Namespaced"}}}},
           {"namespaceSelector", {{"matchLabels", {{kTestLabel, "true"}}}}},
           {"failurePolicy", "Fail"},
           {"sideEffects", "None"},
           {"admissionReviewVersions", {"v1"}},
           {"timeoutSeconds", 10}}}}};
    auto created = client_->create(operator_::kMutatingWebhookConfigurations, "", configuration);
    ASSERT_TRUE(created.ok()) << created.status().to_string();
  }

  static void TearDownTestSuite() {
    server_.reset();
    serving_.reset();
    client_.reset();
  }

  static json guard(const json& request) {
    std::string operator_user;
    {
      std::lock_guard lock(mu_);
      last_user_ = request.value(json::json_pointer("/userInfo/username"), std::string());
      operator_user = operator_user_;
    }
    operator_::PodAdmission admission(
        {.operator_user = operator_user,
         .on_decision = [](const std::string&, const std::string&) { ++decisions_; }});
    return admission.guard(request);
  }

  static void set_operator_user(const std::string& user) {
    std::lock_guard lock(mu_);
    operator_user_ = user;
  }
  static std::string last_user() {
    std::lock_guard lock(mu_);
    return last_user_;
  }

  static operator_::WebhookCertOptions cert_options(std::chrono::seconds cert_validity = 90 * 24h,
                                                    std::chrono::seconds ca_validity = 5 * 365 *
                                                                                       24h) {
    return {.ns = kSystemNs,
            .secret = kSecret,
            .service = "localhost",  // DNS names localhost, localhost.<ns>, ...
            .webhook_configuration = kConfiguration,
            .ca_validity = ca_validity,
            .cert_validity = cert_validity};
  }

  static json secret() {
    auto s = client_->get(kube::resources::kSecrets, kSystemNs, kSecret);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? *s : json::object();
  }
  static json configuration() {
    auto c = client_->get(operator_::kMutatingWebhookConfigurations, "", kConfiguration);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? *c : json::object();
  }

  static json pod(const std::string& name, bool restore_annotation) {
    json p = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}, {"namespace", kTenantNs}}},
              {"spec", {{"containers", {{{"name", "app"}, {"image", "ferry.local/app:dev"}}}}}}};
    if (restore_annotation) {
      p["metadata"]["annotations"] = {{"ferry.dev/restore-from", "some-migration-uid"}};
    }
    return p;
  }

  // Syncs (idempotent) and waits until the API server calls the webhook
  // with the current CA: a probe pod is denied by the webhook itself.
  void webhook_ready(operator_::WebhookCertificates& certs) {
    Status s = certs.sync();
    ASSERT_TRUE(s.ok()) << s.to_string();
    set_operator_user("nobody");
    std::string last;
    ASSERT_TRUE(wait_until(
        [&] {
          auto r = client_->create(kube::resources::kPods, kTenantNs, pod("probe", true));
          last = r.ok() ? "created" : r.status().message();
          return last.find("only Ferry may create") != std::string::npos;
        },
        30s, 200ms))
        << last;
  }

  static inline std::unique_ptr<kube::Client> client_;
  static inline std::shared_ptr<webhook::ServingCertificate> serving_;
  static inline std::unique_ptr<webhook::WebhookServer> server_;
  static inline int port_ = 0;
  static inline std::mutex mu_;
  static inline std::string operator_user_ = "nobody";
  static inline std::string last_user_;
  static inline std::atomic<int> decisions_ = 0;
};

// Runs first (declaration order): the Secret does not exist yet.
TEST_F(WebhookTest, FirstSyncCreatesTheSecretLoadsItAndInjectsTheCa) {
  ASSERT_EQ(client_->get(kube::resources::kSecrets, kSystemNs, kSecret).status().code(),
            Code::kNotFound);
  EXPECT_FALSE(serving_->loaded());
  operator_::WebhookCertificates certs(*client_, serving_, cert_options());
  Status s = certs.sync();
  ASSERT_TRUE(s.ok()) << s.to_string();

  json first = secret();
  const std::string ca = data_of(first, "ca.crt");
  const std::string tls = data_of(first, "tls.crt");
  for (const char* key : {"ca.crt", "ca.key", "tls.crt", "tls.key"}) {
    EXPECT_FALSE(data_of(first, key).empty()) << key;
  }
  EXPECT_TRUE(pki::issued_by(tls, ca).value_or(false));
  EXPECT_EQ(first["metadata"]["labels"]["app.kubernetes.io/part-of"], "ferry");
  EXPECT_TRUE(serving_->loaded());
  EXPECT_EQ(serving_->cert_pem(), tls);
  EXPECT_EQ(served_certificate(port_), tls);
  json config = configuration();
  auto bundle = encoding::base64_decode(
      config["webhooks"][0]["clientConfig"].value("caBundle", std::string()));
  ASSERT_TRUE(bundle.ok());
  EXPECT_EQ(*bundle, ca);

  // The certificate is valid for https://localhost:<port>, as the API
  // server calls it.
  auto transport = kube::make_cpprest_transport("https://localhost:" + std::to_string(port_),
                                                kube::TlsConfig{.ca_pem = ca});
  ASSERT_TRUE(transport.ok());
  auto answer =
      (*transport)
          ->round_trip({.method = "POST",
                        .target = "/guard-pods",
                        .body = R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
                   "request":{"uid":"x","operation":"CREATE","object":{}}})"});
  ASSERT_TRUE(answer.ok()) << answer.status().to_string();
  EXPECT_EQ(answer->status, 200) << answer->body;

  // A second sync, by this replica or a restarted one, changes nothing.
  for (int i = 0; i < 2; ++i) {
    operator_::WebhookCertificates again(*client_, serving_, cert_options());
    Status st = (i == 0 ? certs : again).sync();
    ASSERT_TRUE(st.ok()) << st.to_string();
    json second = secret();
    EXPECT_EQ(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    EXPECT_EQ(data_of(second, "tls.crt"), tls);
    EXPECT_EQ(configuration()["metadata"]["resourceVersion"], config["metadata"]["resourceVersion"])
        << "caBundle written again";
    EXPECT_EQ(serving_->cert_pem(), tls);
  }
}

TEST_F(WebhookTest, TheApiServerRefusesATenantsRestorePodWithTheWebhooksMessage) {
  operator_::WebhookCertificates certs(*client_, serving_, cert_options());
  webhook_ready(certs);
  set_operator_user("system:serviceaccount:ferry-system:ferry-operator");
  auto refused = client_->create(kube::resources::kPods, kTenantNs, pod("restore-me", true));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kPermissionDenied) << refused.status().to_string();
  const std::string message = refused.status().message();
  EXPECT_NE(message.find("guard.pods.ferry.dev"), std::string::npos) << message;
  EXPECT_NE(message.find("only Ferry may create a pod with the ferry.dev/restore-from annotation"),
            std::string::npos)
      << message;
  EXPECT_EQ(client_->get(kube::resources::kPods, kTenantNs, "restore-me").status().code(),
            Code::kNotFound);
  // The fixture's client is the tenant here: the name the webhook saw.
  EXPECT_EQ(last_user(), "ferry-test-admin");

  auto plain = client_->create(kube::resources::kPods, kTenantNs, pod("plain", false));
  EXPECT_TRUE(plain.ok()) << plain.status().to_string();
}

TEST_F(WebhookTest, TheOperatorUserMayCreateARestorePodButNobodyMayChangeTheAnnotation) {
  operator_::WebhookCertificates certs(*client_, serving_, cert_options());
  webhook_ready(certs);
  const std::string admin = last_user();
  ASSERT_FALSE(admin.empty());
  set_operator_user(admin);
  auto created = client_->create(kube::resources::kPods, kTenantNs, pod("replacement", true));
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  EXPECT_EQ((*created)["metadata"]["annotations"]["ferry.dev/restore-from"], "some-migration-uid");

  auto changed = client_->patch(
      kube::resources::kPods, kTenantNs, "replacement", kube::PatchType::kMerge,
      {{"metadata", {{"annotations", {{"ferry.dev/restore-from", "another-migration"}}}}}});
  ASSERT_FALSE(changed.ok()) << "even the operator may not change it";
  EXPECT_NE(changed.status().message().find("cannot be added, changed or removed"),
            std::string::npos)
      << changed.status().message();
  auto removed =
      client_->patch(kube::resources::kPods, kTenantNs, "replacement", kube::PatchType::kMerge,
                     {{"metadata", {{"annotations", {{"ferry.dev/restore-from", nullptr}}}}}});
  EXPECT_FALSE(removed.ok());
  auto kept =
      client_->patch(kube::resources::kPods, kTenantNs, "replacement", kube::PatchType::kMerge,
                     {{"metadata", {{"annotations", {{"ferry.dev/snapshot-ready", "true"}}}}}});
  EXPECT_TRUE(kept.ok()) << kept.status().to_string();
}

// A restarted replica finding a key that does not belong to tls.crt (a
// damaged Secret) issues a new pair instead of failing every sync.
TEST_F(WebhookTest, AKeyNotMatchingTheCertificateIsReissued) {
  operator_::WebhookCertificates certs(*client_, serving_, cert_options());
  webhook_ready(certs);
  // A fresh, long-lived pair first, so only the key is wrong below.
  ASSERT_TRUE(client_
                  ->patch(kube::resources::kSecrets, kSystemNs, kSecret, kube::PatchType::kMerge,
                          {{"data", {{"tls.crt", nullptr}}}})
                  .ok());
  ASSERT_TRUE(certs.sync().ok());
  const std::string ca = data_of(secret(), "ca.crt");
  const std::string tls = data_of(secret(), "tls.crt");
  auto stranger = pki::generate_key();
  ASSERT_TRUE(stranger.ok());
  for (const std::string& wrong_key : {stranger->private_key_pem, std::string("garbage")}) {
    ASSERT_TRUE(client_
                    ->patch(kube::resources::kSecrets, kSystemNs, kSecret, kube::PatchType::kMerge,
                            {{"data", {{"tls.key", encoding::base64_encode(wrong_key)}}}})
                    .ok());
    operator_::WebhookCertificates restarted(*client_, serving_, cert_options());
    Status s = restarted.sync();
    EXPECT_TRUE(s.ok()) << s.to_string();
    const json now = secret();
    EXPECT_NE(data_of(now, "tls.key"), wrong_key);
    EXPECT_NE(data_of(now, "tls.crt"), tls);
    EXPECT_EQ(data_of(now, "ca.crt"), ca);
    webhook::ServingCertificate check;
    EXPECT_TRUE(check.set(data_of(now, "tls.crt"), data_of(now, "tls.key")).ok());
    EXPECT_EQ(serving_->cert_pem(), data_of(now, "tls.crt"));
  }
}

TEST_F(WebhookTest, ADeletedOrDueCertificateIsReissuedUnderTheSameCaWhileServing) {
  operator_::WebhookCertificates certs(*client_, serving_, cert_options());
  webhook_ready(certs);
  set_operator_user("nobody");
  const json before = secret();
  const std::string ca = data_of(before, "ca.crt");
  const std::string old_tls = data_of(before, "tls.crt");
  const std::string bundle = configuration()["webhooks"][0]["clientConfig"]["caBundle"];

  // Lifetimes are counted from notBefore, 5 minutes back (clock skew): a
  // 156 s certificate has 456 s of life and is due with under 152 s left,
  // that is about 4 s after it was issued.
  operator_::WebhookCertificates short_lived(*client_, serving_, cert_options(156s));

  // tls.crt deleted from the Secret: reissued at once, same CA.
  auto patched = client_->patch(kube::resources::kSecrets, kSystemNs, kSecret,
                                kube::PatchType::kMerge, {{"data", {{"tls.crt", nullptr}}}});
  ASSERT_TRUE(patched.ok()) << patched.status().to_string();
  ASSERT_TRUE(data_of(*patched, "tls.crt").empty());
  Status s = short_lived.sync();
  ASSERT_TRUE(s.ok()) << s.to_string();
  const std::string reissued = data_of(secret(), "tls.crt");
  ASSERT_FALSE(reissued.empty());
  EXPECT_NE(reissued, old_tls);
  EXPECT_EQ(data_of(secret(), "ca.crt"), ca);
  EXPECT_TRUE(pki::issued_by(reissued, ca).value_or(false));
  EXPECT_EQ(serving_->cert_pem(), reissued);
  EXPECT_EQ(served_certificate(port_), reissued);
  EXPECT_LE(pki::time_to_expiry(reissued).value_or(0s), 156s);
  // Not due yet: a sync right after changes nothing.
  const json after_reissue = secret();
  ASSERT_TRUE(short_lived.sync().ok());
  EXPECT_EQ(secret()["metadata"]["resourceVersion"], after_reissue["metadata"]["resourceVersion"]);

  // Pods created every 100 ms while the certificate comes due and is renewed.
  const int decisions_before = decisions_.load();
  PodCreator creator("rotation-", kTenantNs);
  std::string renewed;
  EXPECT_TRUE(wait_until(
      [&] {
        Status st = short_lived.sync();
        EXPECT_TRUE(st.ok()) << st.to_string();
        renewed = data_of(secret(), "tls.crt");
        return renewed != reissued;
      },
      30s, 250ms))
      << "not renewed once due";
  // Keep creating for a while on the renewed certificate.
  const int created_at_renewal = creator.created();
  std::this_thread::sleep_for(3s);
  creator.stop();

  EXPECT_EQ(data_of(secret(), "ca.crt"), ca) << "the CA is not due";
  EXPECT_TRUE(pki::issued_by(renewed, ca).value_or(false));
  EXPECT_EQ(configuration()["webhooks"][0]["clientConfig"]["caBundle"], bundle);
  EXPECT_EQ(serving_->cert_pem(), renewed);
  EXPECT_EQ(served_certificate(port_), renewed) << "a new connection sees the renewed certificate";
  for (const auto& f : creator.failures()) ADD_FAILURE() << f;
  EXPECT_GE(creator.created(), 30) << "pods created across the rotation";
  EXPECT_GE(creator.created() - created_at_renewal, 10) << "pods created after the rotation";
  EXPECT_GE(decisions_.load() - decisions_before, creator.created()) << "each went through guard";
}

// The CA comes due: the new CA goes into the bundle next to the old one
// while the serving certificate stays under the old CA; once the webhook
// configuration trusts the new CA, the serving certificate moves to it.
// Pods are created throughout and none fails.
TEST_F(WebhookTest, ACaRenewalKeepsTheWebhookAnswering) {
  // A new, short-lived CA (due about 4 s after it was made, as above).
  ASSERT_TRUE(client_->remove(kube::resources::kSecrets, kSystemNs, kSecret).ok());
  operator_::WebhookCertificates certs(*client_, serving_, cert_options(90 * 24h, 156s));
  webhook_ready(certs);
  const std::string ca1 = data_of(secret(), "ca.crt");
  ASSERT_EQ(certificates_in(ca1).size(), 1u);
  ASSERT_TRUE(pki::issued_by(serving_->cert_pem(), ca1).value_or(false));

  const int decisions_before = decisions_.load();
  PodCreator creator("ca-rotation-", kTenantNs);
  std::vector<std::string> bundle;
  std::string serving_at_ca_renewal;
  EXPECT_TRUE(wait_until(
      [&] {
        Status st = certs.sync();
        EXPECT_TRUE(st.ok()) << st.to_string();
        bundle = certificates_in(data_of(secret(), "ca.crt"));
        serving_at_ca_renewal = serving_->cert_pem();
        return bundle.size() == 2;
      },
      30s, 250ms))
      << "the CA was not renewed once due";
  ASSERT_EQ(bundle.size(), 2u);
  const std::string ca2 = bundle[0];
  EXPECT_EQ(bundle[1], ca1) << "the old CA stays trusted";
  EXPECT_TRUE(pki::issued_by(serving_at_ca_renewal, ca1).value_or(false))
      << "the serving certificate moves only once the API server trusts the new CA";
  auto injected = encoding::base64_decode(
      configuration()["webhooks"][0]["clientConfig"].value("caBundle", std::string()));
  ASSERT_TRUE(injected.ok());
  EXPECT_EQ(*injected, ca2 + ca1);

  EXPECT_TRUE(wait_until(
      [&] {
        Status st = certs.sync();
        EXPECT_TRUE(st.ok()) << st.to_string();
        return pki::issued_by(serving_->cert_pem(), ca2).value_or(false);
      },
      30s, 250ms))
      << "the serving certificate did not move to the new CA";
  EXPECT_TRUE(pki::issued_by(data_of(secret(), "tls.crt"), ca2).value_or(false));
  const int created_at_move = creator.created();
  std::this_thread::sleep_for(2s);
  creator.stop();
  EXPECT_TRUE(pki::issued_by(served_certificate(port_), ca2).value_or(false));
  for (const auto& f : creator.failures()) ADD_FAILURE() << f;
  EXPECT_GE(creator.created() - created_at_move, 10) << "pods created after the move";
  EXPECT_GE(decisions_.load() - decisions_before, creator.created());
}

}  // namespace
}  // namespace ferry::testing
