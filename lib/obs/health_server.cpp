#include "obs/health_server.h"

#include "httpserver/http_server.h"

namespace ferry::obs {

struct HealthServer::Impl {
  std::function<Status()> ready;
  std::unique_ptr<httpserver::Server> server;  // last: stopped before `ready` goes

  httpserver::Response serve(const httpserver::Request& r) const {
    if (r.method != "GET") return {405, "GET /healthz or /readyz\n"};
    if (r.path == "/healthz") return {200, "ok\n"};
    if (r.path == "/readyz") {
      Status st = ready ? ready() : Status();
      return st.ok() ? httpserver::Response{200, "ok\n"}
                     : httpserver::Response{503, st.message() + "\n"};
    }
    return {404, "not found\n"};
  }
};

HealthServer::~HealthServer() = default;

int HealthServer::port() const {
  return impl_->server->port();
}

Result<std::unique_ptr<HealthServer>> HealthServer::start(const std::string& address,
                                                          std::function<Status()> ready) {
  auto server = std::unique_ptr<HealthServer>(new HealthServer());
  server->impl_ = std::make_unique<Impl>();
  Impl* impl = server->impl_.get();
  impl->ready = std::move(ready);
  auto http = httpserver::Server::start(
      address, [impl](const httpserver::Request& r) { return impl->serve(r); },
      {.timeout = std::chrono::seconds(10)});
  if (!http.ok()) {
    return Status(Code::kUnavailable, "cannot serve /healthz: " + http.status().message(),
                  "BindFailed");
  }
  impl->server = std::move(http).value();
  return server;
}

}  // namespace ferry::obs
