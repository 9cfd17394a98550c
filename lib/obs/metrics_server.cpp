#include "obs/metrics_server.h"

namespace ferry::obs {

std::string bind_address(const std::string& address) {
  return !address.empty() && address[0] == ':' ? "0.0.0.0" + address : address;
}

Result<std::unique_ptr<prometheus::Exposer>> serve_metrics(
    const std::string& address, const std::shared_ptr<prometheus::Registry>& registry) {
  if (address.empty()) return std::unique_ptr<prometheus::Exposer>();
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(bind_address(address));
    exposer->RegisterCollectable(registry);
    return exposer;
  } catch (const std::exception& e) {
    return Status(Code::kUnavailable, "cannot serve metrics on " + address + ": " + e.what(),
                  "BindFailed");
  }
}

}  // namespace ferry::obs
