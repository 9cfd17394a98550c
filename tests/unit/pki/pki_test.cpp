#include "pki/pki.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>

namespace ferry::pki {
namespace {

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

X509Ptr parse(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return {cert, &X509_free};
}

// Verifies `leaf` against `ca` for `purpose` with OpenSSL's own chain check.
bool verifies(const Certificate& ca, const Certificate& leaf, int purpose) {
  X509Ptr ca_cert = parse(ca.cert_pem), leaf_cert = parse(leaf.cert_pem);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca_cert.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf_cert.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx, purpose);
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok;
}

TEST(PkiTest, ServerCertificateChainsToCaWithSans) {
  auto ca = make_ca("ferry-test-ca", std::chrono::hours(1));
  ASSERT_TRUE(ca.ok()) << ca.status().to_string();
  auto leaf = sign(*ca, {.common_name = "ferry-webhook",
                         .dns_names = {"ferry-webhook.ferry-system.svc"},
                         .ip_addresses = {"127.0.0.1"},
                         .usage = Usage::kServer});
  ASSERT_TRUE(leaf.ok()) << leaf.status().to_string();
  EXPECT_TRUE(verifies(*ca, *leaf, X509_PURPOSE_SSL_SERVER));
  EXPECT_FALSE(verifies(*ca, *leaf, X509_PURPOSE_SSL_CLIENT));

  X509Ptr cert = parse(leaf->cert_pem);
  EXPECT_EQ(X509_check_host(cert.get(), "ferry-webhook.ferry-system.svc", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "other.svc", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
}

TEST(PkiTest, ClientCertificateCarriesGroups) {
  auto ca = make_ca("ferry-test-ca", std::chrono::hours(1));
  ASSERT_TRUE(ca.ok());
  auto leaf = sign(
      *ca, {.common_name = "admin", .organizations = {"system:masters"}, .usage = Usage::kClient});
  ASSERT_TRUE(leaf.ok());
  EXPECT_TRUE(verifies(*ca, *leaf, X509_PURPOSE_SSL_CLIENT));
  X509Ptr cert = parse(leaf->cert_pem);
  char org[64] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_organizationName, org,
                            sizeof org);
  EXPECT_STREQ(org, "system:masters");
}

TEST(PkiTest, CertificateFromAnotherCaDoesNotVerify) {
  auto ca = make_ca("a", std::chrono::hours(1));
  auto other = make_ca("b", std::chrono::hours(1));
  ASSERT_TRUE(ca.ok() && other.ok());
  auto leaf = sign(*other, {.common_name = "x"});
  ASSERT_TRUE(leaf.ok());
  EXPECT_FALSE(verifies(*ca, *leaf, X509_PURPOSE_SSL_SERVER));
}

TEST(PkiTest, ExpiryIsReported) {
  auto ca = make_ca("a", std::chrono::hours(2));
  ASSERT_TRUE(ca.ok());
  auto left = time_to_expiry(ca->cert_pem);
  ASSERT_TRUE(left.ok());
  EXPECT_GT(left->count(), 2 * 3600 - 60);
  EXPECT_LE(left->count(), 2 * 3600);
}

TEST(PkiTest, GarbageIsAClearError) {
  Certificate bogus{"not a certificate", "not a key"};
  auto leaf = sign(bogus, {.common_name = "x"});
  ASSERT_FALSE(leaf.ok());
  EXPECT_NE(leaf.status().message().find("CA: parse certificate"), std::string::npos)
      << leaf.status().message();
  EXPECT_FALSE(time_to_expiry("garbage").ok());
}

TEST(PkiTest, KeyPairIsPem) {
  auto kp = generate_key();
  ASSERT_TRUE(kp.ok());
  EXPECT_EQ(kp->private_key_pem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  EXPECT_EQ(kp->public_key_pem.rfind("-----BEGIN PUBLIC KEY-----", 0), 0u);
}

}  // namespace
}  // namespace ferry::pki
