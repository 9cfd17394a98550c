#include "admission/webhook_certs.h"

#include <cstdio>
#include <thread>
#include <vector>

#include "encoding/base64.h"
#include "pki/pki.h"

namespace ferry::operator_ {
namespace {

using kube::json;

struct Material {
  std::string ca_bundle;  // current CA first, then the previous one while it is trusted
  std::string ca_key;     // of the current CA
  std::string tls_crt, tls_key;
};

std::string field(const json& secret, const char* key) {
  auto v = secret.value(json::json_pointer(std::string("/data/") + key), std::string());
  auto decoded = encoding::base64_decode(v);
  return decoded.ok() ? *decoded : std::string();
}

// The PEM certificates of a bundle, in order.
std::vector<std::string> split_pem(const std::string& bundle) {
  static const std::string kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    size_t begin = bundle.find("-----BEGIN CERTIFICATE-----", at);
    if (begin == std::string::npos) break;
    size_t end = bundle.find(kEnd, begin);
    if (end == std::string::npos) break;
    out.push_back(bundle.substr(begin, end + kEnd.size() - begin) + "\n");
    at = end + kEnd.size();
  }
  return out;
}

// Less than a third of its lifetime left (or unreadable).
bool due(const std::string& cert_pem) {
  auto left = pki::time_to_expiry(cert_pem);
  auto life = pki::lifetime(cert_pem);
  return !left.ok() || !life.ok() || *left < *life / 3;
}

json secret_data(const Material& m) {
  return {{"ca.crt", encoding::base64_encode(m.ca_bundle)},
          {"ca.key", encoding::base64_encode(m.ca_key)},
          {"tls.crt", encoding::base64_encode(m.tls_crt)},
          {"tls.key", encoding::base64_encode(m.tls_key)}};
}

}  // namespace

WebhookCertificates::WebhookCertificates(kube::Client& client,
                                         std::shared_ptr<webhook::ServingCertificate> serving,
                                         WebhookCertOptions options)
    : client_(client), serving_(std::move(serving)), options_(std::move(options)) {}

Status WebhookCertificates::sync() {
  const std::string& ns = options_.ns;
  auto existing = client_.get(kube::resources::kSecrets, ns, options_.secret);
  if (!existing.ok() && existing.status().code() != Code::kNotFound) {
    return existing.status().with_context("get Secret " + options_.secret);
  }
  Material m;
  if (existing.ok()) {
    m = {field(*existing, "ca.crt"), field(*existing, "ca.key"), field(*existing, "tls.crt"),
         field(*existing, "tls.key")};
  }
  // What the API server trusts now (empty until the configuration exists).
  std::string trusted;
  auto config = client_.get(kMutatingWebhookConfigurations, "", options_.webhook_configuration);
  if (config.ok()) {
    for (const auto& w : config->value("webhooks", json::array())) {
      auto b = encoding::base64_decode(w.value(json::json_pointer("/clientConfig/caBundle"), ""));
      if (b.ok()) trusted += *b;
    }
  } else if (config.status().code() != Code::kNotFound) {
    return config.status().with_context("get MutatingWebhookConfiguration");
  }

  bool changed = false;
  std::vector<std::string> cas = split_pem(m.ca_bundle);
  if (cas.empty() || m.ca_key.empty() || due(cas.front())) {
    auto ca = pki::make_ca("ferry-webhook-ca", options_.ca_validity);
    if (!ca.ok()) return ca.status().with_context("make webhook CA");
    // The new CA first; the old one stays trusted until the next renewal.
    m.ca_bundle = ca->cert_pem + (cas.empty() ? std::string() : cas.front());
    m.ca_key = ca->key_pem;
    cas = split_pem(m.ca_bundle);
    changed = true;
  }
  const std::string& ca = cas.front();
  using std::chrono::seconds;
  // A key that does not parse or does not belong to tls.crt (a damaged
  // Secret) makes the pair unusable too: reissue it, or every sync fails to
  // load it and a restarted replica never serves.
  webhook::ServingCertificate pair;
  const bool usable = !m.tls_crt.empty() && !m.tls_key.empty() &&
                      pki::time_to_expiry(m.tls_crt).value_or(seconds(0)) > seconds(0) &&
                      pair.set(m.tls_crt, m.tls_key).ok();
  const bool current = usable && pki::issued_by(m.tls_crt, ca).value_or(false) && !due(m.tls_crt);
  // Move to a new CA only once the API server trusts it (or nothing yet
  // depends on the old one: no configuration to inject into).
  const bool new_ca_trusted = trusted.find(ca) != std::string::npos || !config.ok();
  if (!current && (!usable || new_ca_trusted)) {
    const std::string svc = options_.service;
    auto cert =
        pki::sign({ca, m.ca_key}, {.common_name = svc + "." + ns + ".svc",
                                   .dns_names = {svc, svc + "." + ns, svc + "." + ns + ".svc",
                                                 svc + "." + ns + ".svc.cluster.local"},
                                   .usage = pki::Usage::kServer,
                                   .validity = options_.cert_validity});
    if (!cert.ok()) return cert.status().with_context("sign webhook serving certificate");
    m.tls_crt = cert->cert_pem;
    m.tls_key = cert->key_pem;
    changed = true;
  }
  if (changed) {
    auto write = [&]() -> Result<json> {
      if (existing.ok()) {
        json secret = *existing;
        secret["data"] = secret_data(m);
        return client_.update(kube::resources::kSecrets, ns, secret);
      }
      json secret = {{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata",
                      {{"name", options_.secret},
                       {"namespace", ns},
                       {"labels", {{"app.kubernetes.io/part-of", "ferry"}}}}},
                     {"type", "Opaque"},
                     {"data", secret_data(m)}};
      return client_.create(kube::resources::kSecrets, ns, secret);
    };
    auto written = write();
    if (!written.ok()) {
      // Another replica renewed first: load its certificate next time.
      return written.status().with_context("write Secret " + options_.secret);
    }
    std::fprintf(
        stderr, "ferry-operator: webhook certificate %s (expires in %llds)\n",
        existing.ok() ? "renewed" : "created",
        static_cast<long long>(pki::time_to_expiry(m.tls_crt).value_or(seconds(0)).count()));
  }
  if (m.tls_crt != loaded_cert_) {
    FERRY_RETURN_IF_ERROR(
        serving_->set(m.tls_crt, m.tls_key).with_context("load Secret " + options_.secret));
    loaded_cert_ = m.tls_crt;
    std::fprintf(stderr, "ferry-operator: serving webhook certificate from Secret %s/%s\n",
                 ns.c_str(), options_.secret.c_str());
  }
  if (config.ok()) {
    const std::string bundle = encoding::base64_encode(m.ca_bundle);
    json updated = *config;
    bool differs = false;
    for (auto& w : updated["webhooks"]) {
      if (w.value(json::json_pointer("/clientConfig/caBundle"), "") != bundle) {
        w["clientConfig"]["caBundle"] = bundle;
        differs = true;
      }
    }
    if (differs) {
      auto r = client_.update(kMutatingWebhookConfigurations, "", updated);
      if (!r.ok()) return r.status().with_context("inject caBundle");
    }
  }
  return {};
}

void WebhookCertificates::run(std::stop_token stop, std::chrono::seconds interval) {
  while (!stop.stop_requested()) {
    Status st = sync();
    if (!st.ok()) std::fprintf(stderr, "ferry-operator: webhook TLS: %s\n", st.to_string().c_str());
    // Retry soon after a failure (a lost race, the API briefly away).
    auto wait = st.ok() ? interval : std::min(interval, std::chrono::seconds(2));
    for (auto until = std::chrono::steady_clock::now() + wait;
         std::chrono::steady_clock::now() < until && !stop.stop_requested();) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

}  // namespace ferry::operator_
