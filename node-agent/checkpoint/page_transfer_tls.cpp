#include "checkpoint/page_transfer_tls.h"

#include "pki/pki.h"

namespace ferry::checkpoint {

Result<PageTransferCredentials> mint_page_transfer_credentials(const std::string& address,
                                                               const std::string& migration_uid,
                                                               std::chrono::seconds validity) {
  if (address.empty()) return invalid_argument("page transfer TLS: no page server address");
  const std::string name = "ferry page transfer " + migration_uid;
  auto ca = pki::make_ca(name + " CA", validity);
  if (!ca.ok()) return ca.status().with_context("page transfer CA");
  auto server = pki::sign(*ca, {.common_name = name + " page server",
                                .ip_addresses = {address},
                                .usage = pki::Usage::kServer,
                                .validity = validity});
  if (!server.ok()) return server.status().with_context("page server certificate");
  // The client names the server's address too: CRIU's page server checks
  // its peer's certificate against its own --address.
  auto client = pki::sign(*ca, {.common_name = name + " lazy-pages",
                                .ip_addresses = {address},
                                .usage = pki::Usage::kClient,
                                .validity = validity});
  if (!client.ok()) return client.status().with_context("lazy-pages certificate");
  return PageTransferCredentials{.ca_cert = ca->cert_pem,
                                 .server_cert = server->cert_pem,
                                 .server_key = server->key_pem,
                                 .client_cert = client->cert_pem,
                                 .client_key = client->key_pem};
}

}  // namespace ferry::checkpoint
