#include "obs/health_server.h"

#include <cpprest/http_listener.h>

#include "obs/metrics_server.h"

namespace ferry::obs {

using web::http::experimental::listener::http_listener;

struct HealthServer::Impl {
  std::unique_ptr<http_listener> listener;
  std::function<Status()> ready;
};

HealthServer::~HealthServer() {
  if (impl_ && impl_->listener) {
    try {
      impl_->listener->close().wait();
    } catch (...) {  // shutting down anyway
    }
  }
}

Result<std::unique_ptr<HealthServer>> HealthServer::start(const std::string& address,
                                                          std::function<Status()> ready) {
  const std::string host_port = bind_address(address);
  auto server = std::unique_ptr<HealthServer>(new HealthServer());
  server->impl_ = std::make_unique<Impl>();
  server->impl_->ready = std::move(ready);
  try {
    server->impl_->listener = std::make_unique<http_listener>(U("http://" + host_port));
    Impl* impl = server->impl_.get();
    server->impl_->listener->support(
        web::http::methods::GET, [impl](const web::http::http_request& r) {
          const std::string path = r.relative_uri().path();
          if (path == "/healthz") {
            r.reply(web::http::status_codes::OK, "ok\n");
          } else if (path == "/readyz") {
            Status st = impl->ready ? impl->ready() : Status();
            r.reply(
                st.ok() ? web::http::status_codes::OK : web::http::status_codes::ServiceUnavailable,
                st.ok() ? std::string("ok\n") : st.message() + "\n");
          } else {
            r.reply(web::http::status_codes::NotFound, "not found\n");
          }
        });
    server->impl_->listener->open().wait();
  } catch (const std::exception& e) {
    return Status(Code::kUnavailable, "cannot serve /healthz on " + address + ": " + e.what(),
                  "BindFailed");
  }
  return server;
}

}  // namespace ferry::obs
