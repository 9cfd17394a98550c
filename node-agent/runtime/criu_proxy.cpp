#include "runtime/criu_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>

#include "posix/atomic_file.h"
#include "process/subprocess.h"
#include "runtime/criu_rpc.h"

namespace ferry::runtime {

namespace {

// CRIU's RPC messages are a few KiB; runc reads them into 40 KiB.
constexpr size_t kMaxMessage = 1 << 20;
constexpr size_t kMaxPassedFds = 16;

struct Message {
  std::string bytes;
  std::vector<int> fds;  // received with it; ours to close once passed on
};

void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// One message (SOCK_SEQPACKET keeps boundaries), read through `buf` (the
// caller's, reused). 0 bytes and no error: the peer closed.
Result<Message> receive(int fd, std::string& buf) {
  Message m;
  buf.resize(kMaxMessage);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return internal_error(std::string("receive a CRIU RPC message: ") + std::strerror(errno));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      m.fds.push_back(passed);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    close_all(m.fds);
    return internal_error("a CRIU RPC message was larger than the proxy can pass on");
  }
  m.bytes.assign(buf.data(), static_cast<size_t>(n));
  return m;
}

Status send(int fd, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return internal_error(std::string("pass on a CRIU RPC message: ") + std::strerror(errno));
  }
  return {};
}

int exec_real(const std::string& real_criu, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {real_criu};
  argv.insert(argv.end(), args.begin(), args.end());
  auto c_argv = process::c_strings(argv);
  ::execv(c_argv[0], c_argv.data());
  std::fprintf(stderr, "ferry-runc (criu proxy): cannot run %s: %s\n", real_criu.c_str(),
               std::strerror(errno));
  return 127;
}

// Moves `fd` to a number at or above `floor` (close-on-exec).
int move_above(int fd, int floor) {
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, floor);
  if (moved < 0) return fd;
  ::close(fd);
  return moved;
}

// CRIU opens the descriptors its request names by number in its peer's
// process (/proc/<peer>/fd/<n>), and its peer is now this proxy: give the
// proxy, at the same numbers, what the client has there.
Status mirror_client_fds(int client_socket, const std::vector<int>& fds) {
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(client_socket, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
    return internal_error(std::string("SO_PEERCRED: ") + std::strerror(errno));
  }
  for (int n : fds) {
    const std::string path = "/proc/" + std::to_string(peer.pid) + "/fd/" + std::to_string(n);
    int f = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (f < 0) return internal_error("open " + path + ": " + std::strerror(errno));
    if (f != n) {
      int rc = ::dup2(f, n);
      ::close(f);
      if (rc < 0) return internal_error("dup2 " + path + ": " + std::strerror(errno));
    }
  }
  return {};
}

}  // namespace

Status write_verdict(const std::string& file, const Status& verdict) {
  return posix::write_file_atomic(file, verdict.ok() ? "ok\n" : verdict.message() + "\n", 0600);
}

std::optional<Status> read_verdict(const std::string& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  if (line == "ok") return Status();
  return Status(Code::kDataLoss, line.empty() ? "the verification gave no verdict" : line);
}

int run_criu_proxy(const std::string& real_criu, const std::vector<std::string>& args,
                   const std::function<std::optional<Status>()>& verdict,
                   const std::string& error_file, const std::function<bool()>& criu_waits) {
  if (real_criu.empty()) {
    std::fprintf(stderr, "ferry-runc (criu proxy): %s is not set\n", kProxyRealCriuEnv);
    return 127;
  }
  int client = -1;
  if (args.size() == 2 && args[0] == "swrk") {
    try {
      client = std::stoi(args[1]);
    } catch (...) {
      client = -1;
    }
  }
  if (client < 0 || !verdict) return exec_real(real_criu, args);

  // The client's first request says what this is; peeked, so that anything
  // but a restore is the real CRIU's from its first byte.
  std::string first(kMaxMessage, '\0');
  ssize_t n;
  do {
    n = ::recv(client, first.data(), first.size(), MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  const std::string_view peeked(first.data(), n > 0 ? n : 0);
  auto request = criu_rpc::decode(peeked);
  if (!request.ok() || request->type != criu_rpc::kRestore) return exec_real(real_criu, args);
  auto named_fds = criu_rpc::client_fds(peeked);
  if (!named_fds.ok()) return exec_real(real_criu, args);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    (void)posix::write_file_atomic(
        error_file, std::string("the CRIU proxy: socketpair: ") + std::strerror(errno) + "\n",
        0600);
    return 1;
  }
  // The real CRIU gets its end at the client's fd number, so its arguments
  // are the ones runc gave; everything else runc passed stays inherited.
  std::vector<std::string> argv = {real_criu, "swrk", args[1]};
  auto c_argv = process::c_strings(argv);
  pid_t criu = ::fork();
  if (criu < 0) {
    (void)posix::write_file_atomic(
        error_file, std::string("the CRIU proxy: fork: ") + std::strerror(errno) + "\n", 0600);
    return 1;
  }
  if (criu == 0) {
    if (::dup2(pair[1], client) < 0) ::_exit(127);
    ::execv(c_argv[0], c_argv.data());
    ::_exit(127);
  }
  ::close(pair[1]);
  // CRIU has its descriptors; now the proxy's own two move out of the way of
  // the numbers the request names, which then get the client's files. CRIU
  // reads the request (and opens them) only once it is passed on below.
  int floor = 16;
  for (int fd : *named_fds) floor = std::max(floor, fd + 1);
  client = move_above(client, floor);
  const int server = move_above(pair[0], floor);
  if (Status mirrored = mirror_client_fds(client, *named_fds); !mirrored.ok()) {
    // CRIU will fail to open them and say so; this says why. (Not to
    // stderr: during a restore that is the container's own output.)
    (void)posix::write_file_atomic(
        error_file,
        "the CRIU proxy cannot pass runc's descriptors on: " + mirrored.message() + "\n", 0600);
  }

  std::string buf;  // one receive buffer for every message
  bool client_open = true;
  while (true) {
    pollfd fds[2] = {{server, POLLIN, 0},
                     {client, static_cast<short>(client_open ? POLLIN : 0), 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) {  // CRIU -> runc
      auto m = receive(server, buf);
      if (!m.ok() || m->bytes.empty()) break;  // CRIU is done (or gone)
      auto decoded = criu_rpc::decode(m->bytes);
      if (decoded.ok() && decoded->type == criu_rpc::kNotify &&
          decoded->notify_script == "post-restore") {
        // The verdict, or runc's end: a runtime killed meanwhile (the shim
        // gave up) must not leave CRIU and its tasks waiting forever. Asked
        // only now, every 2 ms: CRIU has every page in place and waits.
        // Without a verdict yet, ferry-runc is told, so that the
        // verification takes the core CRIU leaves.
        Status verified;
        bool told = !criu_waits;
        for (;;) {
          if (auto result = verdict()) {
            verified = *result;
            break;
          }
          if (!told) told = criu_waits();
          pollfd hangup{client, 0, 0};
          if (::poll(&hangup, 1, 2) > 0 && (hangup.revents & (POLLHUP | POLLERR)) != 0) {
            verified = Status(Code::kCancelled, "runc went away during the restore");
            break;
          }
        }
        if (!verified.ok()) {
          (void)posix::write_file_atomic(error_file, verified.message() + "\n", 0600);
          close_all(m->fds);
          // CRIU aborts: it kills the restored tasks and answers runc with a
          // failed restore, which is passed on below.
          if (!send(server, criu_rpc::encode_notify_answer(false), {}).ok()) break;
          continue;
        }
      }
      Status passed = send(client, m->bytes, m->fds);
      close_all(m->fds);
      if (!passed.ok()) break;
    }
    if (client_open && fds[1].revents != 0) {  // runc -> CRIU
      auto m = receive(client, buf);
      if (!m.ok() || m->bytes.empty()) {
        // runc is gone or done writing: CRIU sees the same.
        ::shutdown(server, SHUT_WR);
        client_open = false;
        continue;
      }
      Status passed = send(server, m->bytes, m->fds);
      close_all(m->fds);
      if (!passed.ok()) break;
    }
  }
  ::close(server);
  int status = 0;
  while (::waitpid(criu, &status, 0) < 0 && errno == EINTR) {
  }
  return process::exit_code(status);
}

}  // namespace ferry::runtime
