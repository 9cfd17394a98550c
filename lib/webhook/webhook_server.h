// An HTTPS server for Kubernetes admission webhooks: the API server POSTs
// an AdmissionReview to a path, the handler for that path decides, and the
// server answers with the AdmissionReview response (over lib/httpserver).
//
// The serving certificate is read per TLS handshake from a
// ServingCertificate, so a rotated certificate is used from the next
// connection on, without closing the listener: a webhook call never meets
// a restart window.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "status/status.h"

namespace ferry::webhook {

// The certificate and key presented to clients; set() swaps both at once.
class ServingCertificate {
 public:
  ServingCertificate();
  ~ServingCertificate();
  ServingCertificate(const ServingCertificate&) = delete;
  ServingCertificate& operator=(const ServingCertificate&) = delete;

  // PEM certificate (leaf first, then any chain) and its PEM key.
  // InvalidArgument when they do not parse or do not belong together.
  Status set(const std::string& cert_pem, const std::string& key_pem);
  bool loaded() const;
  // The leaf in use (PEM), for logs and tests.
  std::string cert_pem() const;

  struct Loaded;  // parsed OpenSSL objects (webhook_server.cpp)
  std::shared_ptr<const Loaded> current() const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Loaded> loaded_;
  std::string cert_pem_;
};

// Decides one AdmissionReview `request` (the review's .request object) and
// returns the review's .response object without uid (the server adds it).
using AdmissionHandler = std::function<nlohmann::json(const nlohmann::json& request)>;

class WebhookServer {
 public:
  ~WebhookServer();
  // `address` is "host:port" (":8443" listens on every address); `handlers`
  // by URL path. Serves only while `certificate` is loaded (a handshake
  // before that fails, and the API server applies the failure policy).
  static Result<std::unique_ptr<WebhookServer>> start(
      const std::string& address, std::shared_ptr<ServingCertificate> certificate,
      std::map<std::string, AdmissionHandler> handlers);
  // The port served (the one the kernel chose for port 0).
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Response objects for handlers.
nlohmann::json allow();
nlohmann::json deny(int code, const std::string& reason, const std::string& message);
// Allowed with an RFC 6902 JSON patch (an array of operations); a plain
// allow() when `operations` is empty.
nlohmann::json allow_with_patch(const nlohmann::json& operations);

}  // namespace ferry::webhook
