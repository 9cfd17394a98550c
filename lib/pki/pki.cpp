#include "pki/pki.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace ferry::pki {
namespace {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;

Status openssl_error(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return internal_error(what + ": " + buf);
}

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<PkeyPtr> new_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return openssl_error("generate P-256 key");
  return key;
}

Result<std::string> key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return openssl_error("encode private key");
  }
  return bio_string(bio.get());
}

Result<std::string> cert_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return openssl_error("encode certificate");
  return bio_string(bio.get());
}

Result<X509Ptr> parse_cert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return openssl_error("parse certificate");
  return cert;
}

Result<PkeyPtr> parse_key(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return openssl_error("parse private key");
  return key;
}

Status add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) {
    return openssl_error("add extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  }
  return {};
}

// A certificate skeleton: random 128-bit serial, subject, validity, public key.
Result<X509Ptr> new_cert(const CertRequest& req, EVP_PKEY* key) {
  X509Ptr cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), 2)) return openssl_error("new certificate");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return openssl_error("serial");
  serial[0] &= 0x7f;  // positive
  BnPtr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) {
    return openssl_error("set serial");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  for (const auto& org : req.organizations) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(req.common_name.c_str()), -1,
                             -1, 0);
  // Backdate a little so a peer with a slightly slow clock accepts it at once.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(req.validity.count()));
  if (!X509_set_pubkey(cert.get(), key)) return openssl_error("set public key");
  return cert;
}

}  // namespace

Result<KeyPair> generate_key() {
  auto key = new_key();
  if (!key.ok()) return key.status();
  auto priv = key_pem(key->get());
  if (!priv.ok()) return priv.status();
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PUBKEY(bio.get(), key->get())) return openssl_error("encode public key");
  return KeyPair{*priv, bio_string(bio.get())};
}

Result<Certificate> make_ca(const std::string& common_name, std::chrono::seconds validity) {
  auto key = new_key();
  if (!key.ok()) return key.status();
  CertRequest req{.common_name = common_name, .validity = validity};
  auto cert = new_cert(req, key->get());
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(c));
  FERRY_RETURN_IF_ERROR(add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE"));
  FERRY_RETURN_IF_ERROR(
      add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
  FERRY_RETURN_IF_ERROR(add_ext(c, c, NID_subject_key_identifier, "hash"));
  if (!X509_sign(c, key->get(), EVP_sha256())) return openssl_error("self-sign CA");
  auto cpem = cert_pem(c);
  if (!cpem.ok()) return cpem.status();
  auto kpem = key_pem(key->get());
  if (!kpem.ok()) return kpem.status();
  return Certificate{*cpem, *kpem};
}

Result<Certificate> sign(const Certificate& ca, const CertRequest& request) {
  auto ca_cert = parse_cert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status().with_context("CA");
  auto ca_key = parse_key(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status().with_context("CA");
  auto key = new_key();
  if (!key.ok()) return key.status();
  auto cert = new_cert(request, key->get());
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(ca_cert->get()));
  FERRY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_basic_constraints, "critical,CA:FALSE"));
  FERRY_RETURN_IF_ERROR(
      add_ext(c, ca_cert->get(), NID_key_usage, "critical,digitalSignature,keyEncipherment"));
  const char* eku = request.usage == Usage::kServer   ? "serverAuth"
                    : request.usage == Usage::kClient ? "clientAuth"
                                                      : "serverAuth,clientAuth";
  FERRY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_ext_key_usage, eku));
  FERRY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_authority_key_identifier, "keyid"));
  std::string san;
  for (const auto& d : request.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : request.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (!san.empty()) FERRY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_subject_alt_name, san));
  if (!X509_sign(c, ca_key->get(), EVP_sha256())) return openssl_error("sign certificate");
  auto cpem = cert_pem(c);
  if (!cpem.ok()) return cpem.status();
  auto kpem = key_pem(key->get());
  if (!kpem.ok()) return kpem.status();
  return Certificate{*cpem, *kpem};
}

Result<std::chrono::seconds> time_to_expiry(const std::string& pem) {
  auto cert = parse_cert(pem);
  if (!cert.ok()) return cert.status();
  int days = 0, secs = 0;
  if (!ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert->get()))) {
    return openssl_error("certificate expiry");
  }
  return std::chrono::seconds(static_cast<long>(days) * 86400 + secs);
}

Result<bool> issued_by(const std::string& cert_pem, const std::string& ca_pem) {
  auto cert = parse_cert(cert_pem);
  if (!cert.ok()) return cert.status();
  auto ca = parse_cert(ca_pem);
  if (!ca.ok()) return ca.status().with_context("CA");
  EVP_PKEY* ca_key = X509_get0_pubkey(ca->get());
  if (ca_key == nullptr) return openssl_error("CA public key");
  const bool ok = X509_check_issued(ca->get(), cert->get()) == X509_V_OK &&
                  X509_verify(cert->get(), ca_key) == 1;
  ERR_clear_error();
  return ok;
}

Result<std::chrono::seconds> lifetime(const std::string& pem) {
  auto cert = parse_cert(pem);
  if (!cert.ok()) return cert.status();
  int days = 0, secs = 0;
  if (!ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert->get()),
                      X509_get0_notAfter(cert->get()))) {
    return openssl_error("certificate lifetime");
  }
  return std::chrono::seconds(static_cast<long>(days) * 86400 + secs);
}

}  // namespace ferry::pki
