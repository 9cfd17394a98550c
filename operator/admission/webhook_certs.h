// The webhooks' TLS, managed by the operator itself (no cert-manager
// needed): a CA and a serving certificate for the webhook Service, kept in
// a Secret so every replica serves the same certificate and a restart or a
// leader change keeps it; the CA injected as caBundle into the
// MutatingWebhookConfiguration; both renewed before they expire.
//
// Any replica may act (no leadership needed): the Secret is written with
// its resourceVersion, so of two replicas renewing at once one wins and the
// other loads the winner's certificate.
//
// Renewal keeps the webhook answering throughout:
//   serving certificate  re-signed once less than a third of its lifetime
//                        is left (or it is missing, damaged or not issued by
//                        the current CA); replicas load it at their next
//                        sync, and the server picks it per handshake.
//   CA                   once less than a third of its lifetime is left, a
//                        new CA is put first in the bundle next to the old
//                        one; the serving certificate moves to the new CA
//                        only after the webhook configuration trusts it.
#pragma once

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>

#include "kube/client.h"
#include "status/status.h"
#include "webhook/webhook_server.h"

namespace ferry::operator_ {

inline const kube::ResourceType kMutatingWebhookConfigurations{
    "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration", false};

struct WebhookCertOptions {
  std::string ns = "ferry-system";
  std::string secret = "ferry-webhook-tls";
  std::string service = "ferry-webhook";                // the certificate's DNS names
  std::string webhook_configuration = "ferry-webhook";  // where caBundle goes
  std::chrono::seconds ca_validity{std::chrono::hours(24 * 365 * 5)};
  std::chrono::seconds cert_validity{std::chrono::hours(24 * 90)};
};

class WebhookCertificates {
 public:
  WebhookCertificates(kube::Client& client, std::shared_ptr<webhook::ServingCertificate> serving,
                      WebhookCertOptions options);

  // One pass: create or renew what is due, load the serving certificate,
  // inject the CA bundle. Errors are transient (API) and worth a retry.
  Status sync();
  // sync() every `interval` until `stop`, logging failures.
  void run(std::stop_token stop, std::chrono::seconds interval);

 private:
  kube::Client& client_;
  std::shared_ptr<webhook::ServingCertificate> serving_;
  WebhookCertOptions options_;
  std::string loaded_cert_;
};

}  // namespace ferry::operator_
