// Raw loopback clients for the tests of Ferry's own servers
// (lib/httpserver, the webhook server), which must control the connection
// byte by byte: a plain TCP connection, and a TLS client that hangs up
// without a close_notify, as a client that dies mid-request does.
// Header-only, like free_port.h.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace ferry::testing {

// A TCP connection to 127.0.0.1:`port` whose reads give up after 10 s, so
// a server that never answers fails a test instead of hanging it; -1 when
// it cannot connect (the descriptor is closed then).
inline int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// How far one TLS visit got; each step only after the one before.
struct TlsVisit {
  bool connected = false;  // TCP
  bool handshake = false;
  bool wrote = false;     // all of `raw`
  bool answered = false;  // some bytes back (only when asked to read)
};

// Connects without verifying the server, writes `raw`, waits `linger` (so
// the server has started on the request), reads if `read_answer`, then
// hangs up.
inline TlsVisit tls_hang_up(int port, const std::string& raw,
                            std::chrono::milliseconds linger = std::chrono::milliseconds(0),
                            bool read_answer = false) {
  TlsVisit visit;
  const int fd = connect_loopback(port);
  visit.connected = fd >= 0;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  if (visit.connected && SSL_set_fd(ssl, fd) == 1) {
    visit.handshake = SSL_connect(ssl) == 1;
    visit.wrote = visit.handshake && SSL_write(ssl, raw.data(), static_cast<int>(raw.size())) ==
                                         static_cast<int>(raw.size());
    std::this_thread::sleep_for(linger);
    if (visit.wrote && read_answer) {
      char buf[512];
      visit.answered = SSL_read(ssl, buf, sizeof buf) > 0;
    }
  }
  SSL_free(ssl);  // no SSL_shutdown: no close_notify
  SSL_CTX_free(ctx);
  if (fd >= 0) ::close(fd);
  return visit;
}

}  // namespace ferry::testing
