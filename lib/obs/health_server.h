// /healthz and /readyz for kubelet's probes, separate from /metrics (which
// prometheus-cpp serves and which cannot answer 503). /healthz answers 200
// while the process serves; /readyz answers 200 only while `ready()` holds
// (informers synced, say), else 503 with the reason.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "status/status.h"

namespace ferry::obs {

class HealthServer {
 public:
  ~HealthServer();
  // `address` is "host:port" (":8081" listens on every address).
  static Result<std::unique_ptr<HealthServer>> start(const std::string& address,
                                                     std::function<Status()> ready);
  // The port served (the one the kernel chose for port 0).
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::obs
