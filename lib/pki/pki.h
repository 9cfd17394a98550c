// Minimal X.509 PKI on OpenSSL: a self-signed CA and certificates it signs
// (serving certificates with DNS/IP SANs, client certificates with
// organisations as Kubernetes groups). Used by the operator to manage its
// webhook CA and by the test fixtures to give each control plane its own PKI.
// Keys are ECDSA P-256: fast to generate, accepted by every Kubernetes
// component. Everything is PEM in and PEM out.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::pki {

struct KeyPair {
  std::string private_key_pem;  // PKCS#8
  std::string public_key_pem;   // SubjectPublicKeyInfo
};

struct Certificate {
  std::string cert_pem;
  std::string key_pem;
};

enum class Usage { kServer, kClient, kServerAndClient };

struct CertRequest {
  std::string common_name;
  std::vector<std::string> organizations;  // Kubernetes groups for client certs
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  Usage usage = Usage::kServer;
  std::chrono::seconds validity = std::chrono::hours(24 * 365);
};

Result<KeyPair> generate_key();

// A self-signed CA certificate and its key.
Result<Certificate> make_ca(const std::string& common_name, std::chrono::seconds validity);

// A leaf certificate signed by `ca`.
Result<Certificate> sign(const Certificate& ca, const CertRequest& request);

// Seconds until the certificate expires (negative once it has), for rotation.
Result<std::chrono::seconds> time_to_expiry(const std::string& cert_pem);

// Whether `cert_pem` is signed by the CA certificate `ca_pem`.
Result<bool> issued_by(const std::string& cert_pem, const std::string& ca_pem);

// From notBefore to notAfter, for renewing at a fraction of it.
Result<std::chrono::seconds> lifetime(const std::string& cert_pem);

}  // namespace ferry::pki
