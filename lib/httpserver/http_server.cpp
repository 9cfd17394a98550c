#include "httpserver/http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

namespace ferry::httpserver {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// What every connection reads; owned by Server::Impl, which outlives them.
struct Shared {
  Handler handler;
  Options options;
};

Response call_handler(const Handler& handler, const Request& request) {
  try {
    return handler(request);
  } catch (const std::exception& e) {
    return {500, std::string("internal error: ") + e.what() + "\n"};
  } catch (...) {
    return {500, "internal error\n"};
  }
}

// One connection: [TLS handshake,] then request, response, request, ...
// until the client closes, asks to close, stalls past the timeout, or
// sends something that is not HTTP. Every step runs on the connection's
// strand (the stream's executor) and holds the session alive.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, const Shared& shared) : stream_(std::move(stream)), shared_(shared) {}

  void run() {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->begin(); });
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  void arm_deadline() { beast::get_lowest_layer(stream_).expires_after(shared_.options.timeout); }

  void begin() {
    if constexpr (kTls) {
      arm_deadline();
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                // No certificate loaded yet, or a client that
                                // does not trust it: the client sees the
                                // failed handshake.
                                if (!ec) self->read();
                              });
    } else {
      read();
    }
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(shared_.options.body_limit);
    arm_deadline();
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream) return close();
    if (ec == http::error::body_limit) {
      return reply({413, "request body too large\n"}, /*keep_alive=*/false);
    }
    // A timeout, a reset, bytes that are not HTTP: drop the connection (the
    // socket closes with the session).
    if (ec) return;
    auto message = parser_->release();  // the body moves, not copies (up to body_limit)
    const std::string target(message.target());
    Request request{.method = std::string(message.method_string()),
                    .path = target.substr(0, target.find('?')),
                    .content_type = std::string(message[http::field::content_type]),
                    .body = std::move(message.body())};
    reply(call_handler(shared_.handler, request), message.keep_alive());
  }

  void reply(Response response, bool keep_alive) {
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(response.status));
    out->set(http::field::content_type, response.content_type);
    out->keep_alive(keep_alive);
    out->body() = std::move(response.body);
    out->prepare_payload();
    arm_deadline();
    http::async_write(stream_, *out,
                      [self = this->shared_from_this(), out](beast::error_code ec, std::size_t) {
                        if (ec) return;
                        if (out->keep_alive()) {
                          self->read();
                        } else {
                          self->close();
                        }
                      });
  }

  void close() {
    if constexpr (kTls) {
      arm_deadline();
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  Stream stream_;
  const Shared& shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

// "host:port", ":port" (every address) or "[v6]:port"; a host that is not
// an address is resolved.
Result<tcp::endpoint> endpoint_of(const std::string& address, asio::io_context& io) {
  const auto colon = address.rfind(':');
  int port = -1;
  if (colon != std::string::npos) {
    const char* first = address.data() + colon + 1;
    const char* last = address.data() + address.size();
    auto [end, err] = std::from_chars(first, last, port);
    if (err != std::errc() || end != last || first == last) port = -1;
  }
  if (port < 0 || port > 65535) {
    return Status(Code::kInvalidArgument, "address \"" + address + "\" is not host:port (or :port)",
                  "BindFailed");
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  beast::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  if (!ec) return tcp::endpoint(ip, static_cast<unsigned short>(port));
  tcp::resolver resolver(io);
  auto found = resolver.resolve(host, std::to_string(port), ec);
  if (ec || found.empty()) {
    return Status(Code::kInvalidArgument, "cannot resolve \"" + host + "\": " + ec.message(),
                  "BindFailed");
  }
  return found.begin()->endpoint();
}

}  // namespace

struct Server::Impl {
  // Declared in the order they may be destroyed, last first: the
  // io_context's pending steps own the sessions, which read `shared` and
  // whose TLS streams came from `tls`.
  asio::ssl::context tls{asio::ssl::context::tls_server};
  Shared shared;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_backoff{io};
  std::vector<std::thread> threads;
  int port = 0;  // read once bound: the acceptor itself belongs to the accept loop

  void accept() {
    // One accept at a time, so the acceptor needs no strand; each
    // connection gets its own.
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        // Out of descriptors, say: try again shortly instead of spinning.
        accept_backoff.expires_after(std::chrono::milliseconds(100));
        accept_backoff.async_wait([this](beast::error_code e) {
          if (!e) accept();
        });
        return;
      }
      if (shared.options.configure_tls) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            beast::ssl_stream<beast::tcp_stream>(std::move(socket), tls), shared)
            ->run();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), shared)
            ->run();
      }
      accept();
    });
  }
};

Server::Server() : impl_(std::make_unique<Impl>()) {}

Server::~Server() {
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
}

int Server::port() const {
  return impl_->port;
}

Result<std::unique_ptr<Server>> Server::start(const std::string& address, Handler handler,
                                              Options options) {
  auto server = std::unique_ptr<Server>(new Server());
  Impl& impl = *server->impl_;
  impl.shared = {std::move(handler), std::move(options)};
  if (impl.shared.options.configure_tls) {
    impl.shared.options.configure_tls(impl.tls.native_handle());
  }
  auto endpoint = endpoint_of(address, impl.io);
  if (!endpoint.ok()) return endpoint.status();
  beast::error_code ec;
  auto failed = [&](const char* step) {
    return Status(Code::kUnavailable,
                  std::string("cannot serve on ") + address + ": " + step + ": " + ec.message(),
                  "BindFailed");
  };
  if (impl.acceptor.open(endpoint->protocol(), ec)) return failed("socket");
  if (impl.acceptor.set_option(asio::socket_base::reuse_address(true), ec)) {
    return failed("SO_REUSEADDR");
  }
  if (impl.acceptor.bind(*endpoint, ec)) return failed("bind");
  if (impl.acceptor.listen(asio::socket_base::max_listen_connections, ec)) return failed("listen");
  impl.port = impl.acceptor.local_endpoint(ec).port();
  impl.accept();
  const int threads = std::max(1, impl.shared.options.threads);
  for (int i = 0; i < threads; ++i) {
    impl.threads.emplace_back([&impl] { impl.io.run(); });
  }
  return server;
}

}  // namespace ferry::httpserver
