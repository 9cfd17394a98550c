// Standard base64 (RFC 4648, with padding), as used by kubeconfig *-data
// fields, Secret data and webhook caBundle fields.
#pragma once

#include <string>
#include <string_view>

#include "status/status.h"

namespace ferry::encoding {

std::string base64_encode(std::string_view data);
Result<std::string> base64_decode(std::string_view text);

}  // namespace ferry::encoding
