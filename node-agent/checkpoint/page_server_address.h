// A PostCopy page server's address as the source agent publishes it in
// restore-options.json ("address:port", "[v6-address]:port"), split for
// CRIU's --address/--port (ferry-runc's lazy-pages) and the certificate
// the page server presents (page_transfer_tls.h). Inline: ferry-runc uses
// it without linking the checkpoint library.
#pragma once

#include <string>

#include "status/status.h"

namespace ferry::checkpoint {

struct PageServerAddress {
  std::string host;  // without brackets
  std::string port;  // 1-65535, digits only
};

inline Result<PageServerAddress> parse_page_server(const std::string& page_server) {
  auto colon = page_server.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == page_server.size()) {
    return invalid_argument("page server \"" + page_server + "\" is not address:port");
  }
  PageServerAddress a{page_server.substr(0, colon), page_server.substr(colon + 1)};
  if (a.host.size() > 1 && a.host.front() == '[' && a.host.back() == ']') {
    a.host = a.host.substr(1, a.host.size() - 2);
  }
  if (a.port.find_first_not_of("0123456789") != std::string::npos || a.port.size() > 5 ||
      std::stoi(a.port) == 0 || std::stoi(a.port) > 65535) {
    return invalid_argument("page server \"" + page_server + "\" has no valid port");
  }
  return a;
}

}  // namespace ferry::checkpoint
