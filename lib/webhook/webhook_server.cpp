#include "webhook/webhook_server.h"

#include <cpprest/http_listener.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <vector>

#include "encoding/base64.h"
#include "obs/metrics_server.h"

namespace ferry::webhook {

using nlohmann::json;
using web::http::experimental::listener::http_listener;
using web::http::experimental::listener::http_listener_config;

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
  std::unique_ptr<http_listener> listener;
};

WebhookServer::~WebhookServer() {
  if (impl_ && impl_->listener) {
    try {
      impl_->listener->close().wait();
    } catch (...) {  // shutting down anyway
    }
  }
}

Result<std::unique_ptr<WebhookServer>> WebhookServer::start(
    const std::string& address, std::shared_ptr<ServingCertificate> certificate,
    std::map<std::string, AdmissionHandler> handlers) {
  auto server = std::unique_ptr<WebhookServer>(new WebhookServer());
  server->impl_ = std::make_unique<Impl>();
  Impl* impl = server->impl_.get();
  impl->certificate = std::move(certificate);
  impl->handlers = std::move(handlers);
  http_listener_config config;
  const ServingCertificate* cert = impl->certificate.get();
  config.set_ssl_context_callback([cert](boost::asio::ssl::context& ctx) {
    ctx.set_options(boost::asio::ssl::context::default_workarounds |
                    boost::asio::ssl::context::no_sslv2 | boost::asio::ssl::context::no_sslv3 |
                    boost::asio::ssl::context::no_tlsv1 | boost::asio::ssl::context::no_tlsv1_1);
    SSL_CTX_set_cert_cb(ctx.native_handle(), use_current_certificate,
                        const_cast<ServingCertificate*>(cert));
  });
  try {
    impl->listener =
        std::make_unique<http_listener>(U("https://" + obs::bind_address(address)), config);
    impl->listener->support([impl](web::http::http_request r) {
      if (r.method() != web::http::methods::POST) {
        r.reply(web::http::status_codes::MethodNotAllowed, "POST an AdmissionReview\n");
        return;
      }
      auto handler = impl->handlers.find(r.relative_uri().path());
      if (handler == impl->handlers.end()) {
        r.reply(web::http::status_codes::NotFound, "no webhook at this path\n");
        return;
      }
      r.extract_string(true).then([r, handler](const std::string& body) mutable {
        json review = json::parse(body, nullptr, false);
        if (review.is_discarded() || !review.contains("request") ||
            !review["request"].is_object()) {
          r.reply(web::http::status_codes::BadRequest, "body is not an AdmissionReview\n");
          return;
        }
        json response;
        try {
          response = handler->second(review["request"]);
        } catch (const std::exception& e) {
          // A handler bug must not take the server down; the API server
          // applies the webhook's failure policy to this error.
          response = deny(500, "InternalError", std::string("webhook failed: ") + e.what());
        }
        r.reply(web::http::status_codes::OK, review_response(review, response).dump(),
                "application/json");
      });
    });
    impl->listener->open().wait();
  } catch (const std::exception& e) {
    return Status(Code::kUnavailable, "cannot serve webhooks on " + address + ": " + e.what(),
                  "BindFailed");
  }
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
