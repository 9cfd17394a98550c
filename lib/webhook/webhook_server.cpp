#include "webhook/webhook_server.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <vector>

#include "encoding/base64.h"
#include "httpserver/http_server.h"

namespace ferry::webhook {

using nlohmann::json;

struct ServingCertificate::Loaded {
  std::vector<X509*> chain;  // leaf first
  EVP_PKEY* key = nullptr;
  ~Loaded() {
    for (X509* c : chain) X509_free(c);
    EVP_PKEY_free(key);
  }
};

ServingCertificate::ServingCertificate() = default;
ServingCertificate::~ServingCertificate() = default;

Status ServingCertificate::set(const std::string& cert_pem, const std::string& key_pem) {
  auto loaded = std::make_shared<Loaded>();
  std::unique_ptr<BIO, decltype(&BIO_free)> certs(
      BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())), BIO_free);
  while (X509* c = PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr)) {
    loaded->chain.push_back(c);
  }
  ERR_clear_error();  // the read that ended the loop
  std::unique_ptr<BIO, decltype(&BIO_free)> key(
      BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), BIO_free);
  loaded->key = PEM_read_bio_PrivateKey(key.get(), nullptr, nullptr, nullptr);
  ERR_clear_error();
  if (loaded->chain.empty() || loaded->key == nullptr) {
    return Status(Code::kInvalidArgument, "serving certificate or key does not parse as PEM",
                  "CertificateInvalid");
  }
  if (X509_check_private_key(loaded->chain.front(), loaded->key) != 1) {
    ERR_clear_error();
    return Status(Code::kInvalidArgument, "serving key does not match the certificate",
                  "CertificateInvalid");
  }
  std::lock_guard lock(mu_);
  loaded_ = std::move(loaded);
  cert_pem_ = cert_pem;
  return {};
}

bool ServingCertificate::loaded() const {
  std::lock_guard lock(mu_);
  return loaded_ != nullptr;
}

std::string ServingCertificate::cert_pem() const {
  std::lock_guard lock(mu_);
  return cert_pem_;
}

std::shared_ptr<const ServingCertificate::Loaded> ServingCertificate::current() const {
  std::lock_guard lock(mu_);
  return loaded_;
}

namespace {

// OpenSSL's certificate callback: runs in every handshake, before the
// server's certificate is sent, and picks the one loaded right now.
int use_current_certificate(SSL* ssl, void* arg) {
  auto loaded = static_cast<const ServingCertificate*>(arg)->current();
  if (!loaded) return 0;  // nothing to serve yet: the handshake fails
  if (SSL_use_certificate(ssl, loaded->chain.front()) != 1 ||
      SSL_use_PrivateKey(ssl, loaded->key) != 1) {
    return 0;
  }
  for (size_t i = 1; i < loaded->chain.size(); ++i) {
    if (SSL_add1_chain_cert(ssl, loaded->chain[i]) != 1) return 0;
  }
  return 1;
}

json review_response(const json& review, const json& response) {
  json out = response;
  out["uid"] = review.value(json::json_pointer("/request/uid"), std::string());
  return {{"apiVersion", review.value("apiVersion", "admission.k8s.io/v1")},
          {"kind", "AdmissionReview"},
          {"response", out}};
}

}  // namespace

struct WebhookServer::Impl {
  std::shared_ptr<ServingCertificate> certificate;
  std::map<std::string, AdmissionHandler> handlers;
  std::unique_ptr<httpserver::Server> server;  // last: stopped before the handlers go

  httpserver::Response serve(const httpserver::Request& r) const {
    if (r.method != "POST") return {405, "POST an AdmissionReview\n"};
    auto handler = handlers.find(r.path);
    if (handler == handlers.end()) return {404, "no webhook at this path\n"};
    json review = json::parse(r.body, nullptr, false);
    if (review.is_discarded() || !review.contains("request") || !review["request"].is_object()) {
      return {400, "body is not an AdmissionReview\n"};
    }
    json response;
    try {
      response = handler->second(review["request"]);
    } catch (const std::exception& e) {
      // A handler bug must not take the server down; the API server
      // applies the webhook's failure policy to this error.
      response = deny(500, "InternalError", std::string("webhook failed: ") + e.what());
    }
    return {200, review_response(review, response).dump(), "application/json"};
  }
};

WebhookServer::~WebhookServer() = default;

int WebhookServer::port() const {
  return impl_->server->port();
}

Result<std::unique_ptr<WebhookServer>> WebhookServer::start(
    const std::string& address, std::shared_ptr<ServingCertificate> certificate,
    std::map<std::string, AdmissionHandler> handlers) {
  auto server = std::unique_ptr<WebhookServer>(new WebhookServer());
  server->impl_ = std::make_unique<Impl>();
  Impl* impl = server->impl_.get();
  impl->certificate = std::move(certificate);
  impl->handlers = std::move(handlers);
  const ServingCertificate* cert = impl->certificate.get();
  auto http = httpserver::Server::start(
      address, [impl](const httpserver::Request& r) { return impl->serve(r); },
      {.configure_tls =
           [cert](SSL_CTX* ctx) {
             SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
             SSL_CTX_set_cert_cb(ctx, use_current_certificate,
                                 const_cast<ServingCertificate*>(cert));
           },
       // A guard may read a Migration from the API server, holding its
       // thread meanwhile; four let other reviews go on.
       .threads = 4});
  if (!http.ok()) {
    return Status(Code::kUnavailable, "cannot serve webhooks: " + http.status().message(),
                  "BindFailed");
  }
  impl->server = std::move(http).value();
  return server;
}

json allow() {
  return {{"allowed", true}};
}

json deny(int code, const std::string& reason, const std::string& message) {
  return {{"allowed", false},
          {"status", {{"code", code}, {"reason", reason}, {"message", message}}}};
}

json allow_with_patch(const json& operations) {
  if (operations.empty()) return allow();
  return {{"allowed", true},
          {"patchType", "JSONPatch"},
          {"patch", encoding::base64_encode(operations.dump())}};
}

}  // namespace ferry::webhook
