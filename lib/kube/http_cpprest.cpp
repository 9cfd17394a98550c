// cpprestsdk implementation of HttpTransport. This is the only file that
// includes cpprestsdk; every exception it throws is turned into a Status here.
#include <cpprest/containerstream.h>
#include <cpprest/http_client.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <boost/asio/ssl.hpp>
#include <cctype>
#include <mutex>

#include "kube/http.h"

namespace ferry::kube {
namespace {

namespace http = web::http;
namespace client = web::http::client;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

class CpprestTransport final : public HttpTransport {
 public:
  CpprestTransport(std::string base_url, TlsConfig tls)
      : base_url_(std::move(base_url)), tls_(std::move(tls)) {}

  Result<HttpResponse> round_trip(const HttpRequest& request) override {
    try {
      auto response = client_for(request.timeout).request(to_cpprest(request)).get();
      HttpResponse out = convert_head(response);
      out.body = response.extract_utf8string(true).get();
      return out;
    } catch (const std::exception& e) {
      return failure(request, e);
    }
  }

  Result<HttpResponse> stream_lines(const HttpRequest& request,
                                    const std::function<bool(std::string_view)>& on_line,
                                    std::stop_token stop) override {
    pplx::cancellation_token_source cancel;
    std::stop_callback on_stop(stop, [&cancel] { cancel.cancel(); });
    try {
      auto response =
          client_for(request.timeout).request(to_cpprest(request), cancel.get_token()).get();
      HttpResponse out = convert_head(response);
      if (out.status < 200 || out.status > 299) {
        out.body = response.extract_utf8string(true).get();
        return out;
      }
      auto body = response.body();
      while (!stop.stop_requested()) {
        concurrency::streams::container_buffer<std::string> line;
        size_t n = body.read_line(line).get();
        if (n == 0 && body.is_eof()) break;
        if (n == 0) continue;
        if (!on_line(line.collection())) break;
      }
      cancel.cancel();  // drop the connection rather than drain an endless body
      return out;
    } catch (const std::exception& e) {
      if (stop.stop_requested()) return Status(Code::kCancelled, "stream stopped");
      return failure(request, e);
    }
  }

 private:
  static Status failure(const HttpRequest& request, const std::exception& e) {
    std::string what = e.what();
    std::string message = request.method + " " + request.target + ": " + what;
    if (what.find("timed out") != std::string::npos) {
      return Status(Code::kDeadlineExceeded, message);
    }
    // The request never fully left this process (connect failed, or a pooled
    // keep-alive connection the server had closed refused the write), so the
    // server cannot have acted on it: safe to resend whatever the verb.
    if (what.find("Failed to connect") != std::string::npos ||
        what.find("Failed to write request") != std::string::npos) {
      return Status(Code::kUnavailable, message, std::string(kRequestNotSent));
    }
    return Status(Code::kUnavailable, message);
  }

  static http::http_request to_cpprest(const HttpRequest& request) {
    http::http_request req(request.method);
    req.set_request_uri(request.target);
    for (const auto& [name, value] : request.headers) req.headers().add(name, value);
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
        request.method == "PATCH") {
      std::string content_type = "application/json";
      for (const auto& [name, value] : request.headers) {
        if (lower(name) == "content-type") content_type = value;
      }
      req.set_body(request.body, content_type);
    }
    return req;
  }

  static HttpResponse convert_head(const http::http_response& response) {
    HttpResponse out;
    out.status = response.status_code();
    for (const auto& [name, value] : response.headers()) out.headers[lower(name)] = value;
    return out;
  }

  // One cpprestsdk client per timeout: the timeout is a client setting there.
  client::http_client& client_for(std::chrono::milliseconds timeout) {
    std::lock_guard lock(mu_);
    auto it = clients_.find(timeout.count());
    if (it != clients_.end()) return *it->second;
    client::http_client_config config;
    config.set_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
    config.set_validate_certificates(!tls_.insecure_skip_verify);
    TlsConfig tls = tls_;
    config.set_ssl_context_callback([tls](boost::asio::ssl::context& ctx) {
      if (!tls.ca_pem.empty()) {
        // Trust exactly the configured CA bundle, not the system roots.
        SSL_CTX_set_cert_store(ctx.native_handle(), X509_STORE_new());
        ctx.add_certificate_authority(boost::asio::buffer(tls.ca_pem));
      }
      if (!tls.client_cert_pem.empty()) {
        ctx.use_certificate_chain(boost::asio::buffer(tls.client_cert_pem));
        ctx.use_private_key(boost::asio::buffer(tls.client_key_pem),
                            boost::asio::ssl::context::pem);
      }
    });
    auto inserted =
        clients_.emplace(timeout.count(), std::make_unique<client::http_client>(base_url_, config));
    return *inserted.first->second;
  }

  const std::string base_url_;
  const TlsConfig tls_;
  std::mutex mu_;
  std::map<int64_t, std::unique_ptr<client::http_client>> clients_;  // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<HttpTransport>> make_cpprest_transport(const std::string& base_url,
                                                              const TlsConfig& tls) {
  try {
    web::uri uri(base_url);
    if (uri.scheme() != "https" && uri.scheme() != "http") {
      return invalid_argument("server URL must be http(s)://host[:port], got " + base_url);
    }
  } catch (const std::exception& e) {
    return invalid_argument("invalid server URL " + base_url + ": " + e.what());
  }
  return std::unique_ptr<HttpTransport>(new CpprestTransport(base_url, tls));
}

}  // namespace ferry::kube
