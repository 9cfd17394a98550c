// The HTTP/1.1 server for what Ferry serves itself: the admission webhooks
// (over TLS, called by the API server) and the /healthz and /readyz probes.
// Built on Boost.Beast over Boost.Asio, not on cpprestsdk's http_listener:
// cpprestsdk's maintainers support its listener only for the library's own
// tests (microsoft/cpprestsdk#1683), and its stop() closes every open socket
// from the stopping thread while the pool's threads may still be writing to
// them. That race was a segfault in our webhook tests (a client hanging up
// without a TLS close_notify while the server stopped): three crashes
// within 35 runs of each of four parallel loops in session 19, none in 600
// runs since this server replaced it.
//
// Here every connection runs on its own strand, so one connection's steps
// never run concurrently; stopping stops the io_context and joins its
// threads before anything is freed, so no step outlives the server. Every
// read and write has a deadline (a client that stalls is dropped), bodies
// have a size limit (413), a handler that throws answers 500, and a client
// that hangs up costs only its own connection.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "status/status.h"

namespace ferry::httpserver {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query
  std::string content_type;
  std::string body;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
};

// Runs on one of the server's threads; may block (a webhook handler reads
// the API server), which holds only that thread. Exceptions become 500.
using Handler = std::function<Response(const Request&)>;

struct Options {
  // Set: HTTPS. Called once, on the server's OpenSSL context, before the
  // first connection (certificates, a certificate callback, protocol floor).
  std::function<void(SSL_CTX*)> configure_tls;
  int threads = 2;
  // Each read and write, and a keep-alive connection's idle wait, must
  // finish within this; a client that stalls longer is disconnected.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  std::size_t body_limit = std::size_t{8} << 20;  // AdmissionReviews carry whole pods
};

class Server {
 public:
  // `address` is "host:port" (":8443" listens on every address; port 0 lets
  // the kernel choose, see port()). BindFailed when the address cannot be
  // served.
  static Result<std::unique_ptr<Server>> start(const std::string& address, Handler handler,
                                               Options options = {});
  // Closes the listener and every connection and joins the threads; a
  // handler still running finishes first.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;

 private:
  Server();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::httpserver
