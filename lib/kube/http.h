// The HTTP seam of lib/kube: the only way Ferry talks HTTP to the
// Kubernetes API. It is deliberately narrow (one request/response call and
// one line-streaming call for watches) so the implementation can be swapped:
// cpprestsdk is in maintenance mode, and nothing outside http_cpprest.cpp
// may include it. Authentication headers are added by the caller (see
// credentials.h); the transport owns only the connection and TLS.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "status/status.h"

namespace ferry::kube {

struct HttpRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string target;  // path and query, e.g. "/api/v1/pods?limit=500"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

struct TlsConfig {
  std::string ca_pem;           // trust only this CA bundle when set
  std::string client_cert_pem;  // mutual TLS
  std::string client_key_pem;
  bool insecure_skip_verify = false;
};

// Status reason of a transport failure where the request provably did not
// reach the server (nothing was sent, or the write failed): safe to resend.
inline constexpr std::string_view kRequestNotSent = "RequestNotSent";

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;

  // One request, whole body. A non-2xx status is a response, not an error;
  // errors are for requests that got no response (connection, TLS, timeout).
  virtual Result<HttpResponse> round_trip(const HttpRequest& request) = 0;

  // Streams a 2xx response body line by line (newline-delimited JSON, as
  // watches send it) into `on_line` until the server ends the stream,
  // `on_line` returns false, or `stop` is requested. A non-2xx response is
  // returned with its whole body and `on_line` is never called.
  virtual Result<HttpResponse> stream_lines(const HttpRequest& request,
                                            const std::function<bool(std::string_view)>& on_line,
                                            std::stop_token stop) = 0;
};

// A transport for `base_url` (https://host:port) built on cpprestsdk.
Result<std::unique_ptr<HttpTransport>> make_cpprest_transport(const std::string& base_url,
                                                              const TlsConfig& tls);

}  // namespace ferry::kube
