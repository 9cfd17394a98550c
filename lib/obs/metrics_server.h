// The daemons' /metrics endpoint (prometheus-cpp's exposer), started the
// same way by ferry-operator and ferry-agent: one address syntax for every
// bind flag ("host:port", or ":port" for every address), and a bind failure
// as a Status, not an exception.
#pragma once

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "status/status.h"

namespace ferry::obs {

// ":8080" -> "0.0.0.0:8080"; anything else unchanged.
std::string bind_address(const std::string& address);

// Serves `registry` on /metrics at `address`; nullptr when `address` is
// empty (metrics disabled).
Result<std::unique_ptr<prometheus::Exposer>> serve_metrics(
    const std::string& address, const std::shared_ptr<prometheus::Registry>& registry);

}  // namespace ferry::obs
