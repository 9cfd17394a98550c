// A free TCP port on 127.0.0.1 for test servers: control planes, page
// servers. Header-only so every test binary can use it without linking the
// control-plane fixture.
//
// Chosen below the kernel's ephemeral range (net.ipv4.ip_local_port_range),
// not by binding to port 0: a port from that range, once closed, can be
// taken by any outgoing connection before the server binds it, and with
// tests running in parallel that happened (session 18's clean-clone CI:
// kube-apiserver "bind: address already in use" on a port free_port had
// just returned). A port below the range is only taken by another server.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "status/status.h"

namespace ferry::testing {

// Binds 127.0.0.1:`port` (0: any) and returns the port bound, or 0.
inline int bind_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof addr;
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    bound = ntohs(addr.sin_port);
  }
  close(fd);
  return bound;
}

inline Result<int> free_port() {
  int ephemeral_low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low;
  constexpr int kLowest = 10000;
  if (ephemeral_low > kLowest + 1000) {
    std::random_device seed;
    std::mt19937 pick(seed());
    std::uniform_int_distribution<int> port(kLowest, ephemeral_low - 1);
    for (int attempt = 0; attempt < 100; ++attempt) {
      if (int bound = bind_loopback(port(pick)); bound != 0) return bound;
    }
  }
  // No room below the range (or all taken): what the kernel picks.
  if (int bound = bind_loopback(0); bound != 0) return bound;
  return internal_error("bind to a free port");
}

}  // namespace ferry::testing
