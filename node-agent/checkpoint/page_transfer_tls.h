// Mutual TLS for PostCopy's page transfer. CRIU's page server hands the
// frozen source's memory to whoever connects first, in clear text, unless
// it runs with --tls (criu/tls.c, GnuTLS). Each lazy dump therefore gets a
// CA of its own that signs two certificates, one for the source's page
// server (kept in the source's local work directory) and one for the
// target's `criu lazy-pages` (carried in the snapshot, root-only and
// digest-verified like the images beside it, which already hold the rest
// of the process). The CA's key signs those two and is dropped: no other
// certificate can ever chain to this migration's CA, so only a holder of
// the snapshot can fetch the pages and the target only takes pages from
// the server the source started. Both certificates name the page server's
// address (CRIU checks the peer against --address on both ends).
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "status/status.h"

namespace ferry::checkpoint {

// In the snapshot, beside the images (read by ferry-runc on the target).
inline constexpr const char* kPageTransferCaFile = "page-transfer-ca.pem";
inline constexpr const char* kPageTransferClientCertFile = "page-transfer-client.pem";
inline constexpr const char* kPageTransferClientKeyFile = "page-transfer-client-key.pem";

struct PageTransferCredentials {
  std::string ca_cert;  // PEM; its key is gone
  std::string server_cert, server_key;
  std::string client_cert, client_key;
};

// `address`: the page server's IP address (no port, no brackets).
// `validity` bounds how long a stolen snapshot's key is of any use.
Result<PageTransferCredentials> mint_page_transfer_credentials(
    const std::string& address, const std::string& migration_uid,
    std::chrono::seconds validity = std::chrono::hours(24));

// CRIU's long options (name without "--", value or "") that make one end
// of the transfer verify its peer against `ca` and present `cert`/`key`.
// (Inline: ferry-runc uses it and the file names without linking OpenSSL.)
inline std::vector<std::pair<std::string, std::string>> criu_tls_options(const std::string& ca,
                                                                         const std::string& cert,
                                                                         const std::string& key) {
  return {{"tls", ""}, {"tls-cacert", ca}, {"tls-cert", cert}, {"tls-key", key}};
}

}  // namespace ferry::checkpoint
