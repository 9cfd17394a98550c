// A free TCP port on 127.0.0.1 as chosen by the kernel (bind to port 0),
// for test servers: control planes, page servers. Header-only so every test
// binary can use it without linking the control-plane fixture.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "status/status.h"

namespace ferry::testing {

inline Result<int> free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return internal_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return internal_error("bind to a free port");
  }
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace ferry::testing
