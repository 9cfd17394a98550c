#include "runtime/criu_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "posix/atomic_file.h"
#include "process/subprocess.h"
#include "runtime/criu_rpc.h"

namespace ferry::runtime {

namespace {

// CRIU's RPC messages are a few KiB; runc reads them into 40 KiB.
constexpr size_t kMaxMessage = 1 << 20;
constexpr size_t kMaxPassedFds = 16;
// VERSION and FEATURE_CHECK requests are a few bytes; a larger one (a
// client asking something new) is not answered from a kept answer.
constexpr size_t kMaxKeptRequest = 64;

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

// The verification's outcome, waited for at post-restore.
class Verification {
 public:
  explicit Verification(std::function<Status()> verify) {
    auto state = state_;
    std::thread([state, verify = std::move(verify)] {
      Status result = verify();
      std::lock_guard<std::mutex> lock(state->mu);
      state->result = std::move(result);
      state->done = true;
      state->cv.notify_all();
    }).detach();  // a CRIU that fails early lets the proxy exit without waiting
  }
  // The result, unless `timeout` passes first.
  std::optional<Status> wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(state_->mu);
    if (!state_->cv.wait_for(lock, timeout, [&] { return state_->done; })) return std::nullopt;
    return state_->result;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status result;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

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

// The real CRIU, started on a socket of the proxy's own, with every
// message relayed between it and the client.
struct Relay {
  int client = -1;
  int server = -1;
  pid_t criu = -1;
};

// Forks the real CRIU; its end of the socket gets the client's fd number,
// so its arguments are the ones runc gave, and everything else runc passed
// stays inherited. Then the proxy's own two descriptors move out of the way
// of `named_fds`, which get the client's files (CRIU reads the request, and
// opens them, only once it is passed on).
Result<Relay> start_real_criu(const ProxyOptions& o, int client,
                              const std::vector<int>& named_fds) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return internal_error(std::string("the CRIU proxy: socketpair: ") + std::strerror(errno));
  }
  std::vector<std::string> argv = {o.real_criu, "swrk", std::to_string(client)};
  auto c_argv = process::c_strings(argv);
  pid_t criu = ::fork();
  if (criu < 0) {
    ::close(pair[0]);
    ::close(pair[1]);
    return internal_error(std::string("the CRIU proxy: fork: ") + std::strerror(errno));
  }
  if (criu == 0) {
    // Only async-signal-safe calls here: a verification thread may run.
    if (::dup2(pair[1], client) < 0) ::_exit(127);
    ::execv(c_argv[0], c_argv.data());
    ::_exit(127);
  }
  ::close(pair[1]);
  int floor = 16;
  for (int fd : named_fds) floor = std::max(floor, fd + 1);
  Relay r{.client = move_above(client, floor), .server = move_above(pair[0], floor), .criu = criu};
  if (Status mirrored = mirror_client_fds(r.client, named_fds); !mirrored.ok()) {
    // CRIU will fail to open them and say so; this says why. (Not to
    // stderr: during a restore that is the container's own output.)
    (void)posix::write_file_atomic(
        o.error_file,
        "the CRIU proxy cannot pass runc's descriptors on: " + mirrored.message() + "\n", 0600);
  }
  return r;
}

// Relays until CRIU is done; returns its exit code. `intercept` sees every
// message from CRIU first and returns true when it dealt with it itself
// (then it is not passed on).
int relay(Relay r, const std::function<bool(Message&)>& intercept) {
  std::string buf;  // one receive buffer for every message
  bool client_open = true;
  while (true) {
    pollfd fds[2] = {{r.server, POLLIN, 0},
                     {r.client, static_cast<short>(client_open ? POLLIN : 0), 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) {  // CRIU -> runc
      auto m = receive(r.server, buf);
      if (!m.ok() || m->bytes.empty()) break;  // CRIU is done (or gone)
      if (intercept(*m)) {
        close_all(m->fds);
        continue;
      }
      Status passed = send(r.client, m->bytes, m->fds);
      close_all(m->fds);
      if (!passed.ok()) break;
    }
    if (client_open && fds[1].revents != 0) {  // runc -> CRIU
      auto m = receive(r.client, buf);
      if (!m.ok() || m->bytes.empty()) {
        // runc is gone or done writing: CRIU sees the same.
        ::shutdown(r.server, SHUT_WR);
        client_open = false;
        continue;
      }
      Status passed = send(r.server, m->bytes, m->fds);
      close_all(m->fds);
      if (!passed.ok()) break;
    }
  }
  ::close(r.server);
  int status = 0;
  while (::waitpid(r.criu, &status, 0) < 0 && errno == EINTR) {
  }
  return process::exit_code(status);
}

// A restore whose memory images are verified while CRIU reads them: CRIU's
// post-restore notification waits for the verification's end.
int restore_verified(const ProxyOptions& o, int client, const std::vector<int>& named_fds) {
  Verification verification(o.verify);
  auto r = start_real_criu(o, client, named_fds);
  if (!r.ok()) {
    (void)posix::write_file_atomic(o.error_file, r.status().message() + "\n", 0600);
    return 1;
  }
  const int runc = r->client;
  const int criu = r->server;
  return relay(*r, [&](Message& m) {
    auto decoded = criu_rpc::decode(m.bytes);
    if (!decoded.ok() || decoded->type != criu_rpc::kNotify ||
        decoded->notify_script != "post-restore") {
      return false;
    }
    // The verification's end, or runc's: a runtime killed meanwhile (the
    // shim gave up) must not leave CRIU and its tasks waiting forever.
    Status verified;
    for (;;) {
      if (auto result = verification.wait_for(std::chrono::milliseconds(100))) {
        verified = *result;
        break;
      }
      pollfd hangup{runc, 0, 0};
      if (::poll(&hangup, 1, 0) > 0 && (hangup.revents & (POLLHUP | POLLERR)) != 0) {
        verified = Status(Code::kCancelled, "runc went away during the restore");
        break;
      }
    }
    if (verified.ok()) return false;
    (void)posix::write_file_atomic(o.error_file, verified.message() + "\n", 0600);
    // CRIU aborts: it kills the restored tasks and answers runc with a
    // failed restore, which is passed on.
    (void)send(criu, criu_rpc::encode_notify_answer(false), {});
    return true;
  });
}

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// The kept answer to `request`, if CRIU gave it under `identity`.
std::optional<std::string> kept_answer(const std::string& path, const std::string& identity) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const size_t nl = text.find('\n');
  if (nl == std::string::npos || text.compare(0, nl, identity) != 0 || nl + 1 == text.size()) {
    return std::nullopt;
  }
  return text.substr(nl + 1);
}

// A VERSION or FEATURE_CHECK request: answered from the answers directory,
// or by the real CRIU, whose successful answer is kept there.
int answer_check(const ProxyOptions& o, int client, std::string_view request, int type) {
  auto identity = answer_identity(o.real_criu);
  if (!identity.ok()) return -1;
  const std::string path = o.answers_dir + "/" + std::to_string(type) + "-" + hex(request);
  if (auto answer = kept_answer(path, *identity)) {
    std::string buf;
    auto taken = receive(client, buf);  // the peeked request, now consumed
    if (!taken.ok()) return 1;
    close_all(taken->fds);
    return send(client, *answer, {}).ok() ? 0 : 1;
  }
  auto r = start_real_criu(o, client, {});
  if (!r.ok()) return -1;
  return relay(*r, [&](Message& m) {
    auto decoded = criu_rpc::decode(m.bytes);
    if (decoded.ok() && decoded->type == type && decoded->success && m.fds.empty()) {
      (void)posix::write_file_atomic(path, *identity + "\n" + m.bytes, 0600);
    }
    return false;
  });
}

// `name` as exec would find it in PATH (a name with a slash as it is), if
// it is executable; empty otherwise.
std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  std::istringstream dirs(search_path());
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

}  // namespace

std::string search_path() {
  const char* path = std::getenv("PATH");
  return path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

Result<std::map<std::string, std::string>> prepare_criu_proxy(const std::string& dir,
                                                              const std::string& self,
                                                              const std::string& criu) {
  const std::string real = find_in_path(criu);
  if (real.empty()) return not_found("criu (" + criu + ") is not in PATH");
  if (self.empty()) return internal_error("no ferry-runc binary for the CRIU proxy");
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string link = dir + "/criu";
  const std::string answers = dir + "/answers";
  if (fs::read_symlink(link, ec) != fs::path(self) || !fs::is_directory(answers)) {
    fs::create_directories(dir, ec);
    const std::string tmp = link + ".tmp." + std::to_string(::getpid());
    fs::remove(tmp, ec);
    fs::create_symlink(self, tmp, ec);
    if (!ec) fs::rename(tmp, link, ec);
    if (ec) return internal_error("cannot link " + link + " to " + self + ": " + ec.message());
    if (::mkdir(answers.c_str(), 0700) != 0 && errno != EEXIST) {
      return internal_error("mkdir " + answers + ": " + std::strerror(errno));
    }
  }
  return std::map<std::string, std::string>{{"PATH", dir + ":" + search_path()},
                                            {kProxyRealCriuEnv, real},
                                            {kProxyAnswersDirEnv, answers}};
}

Result<std::string> answer_identity(const std::string& real_criu) {
  struct stat st {};
  if (::stat(real_criu.c_str(), &st) != 0) {
    return internal_error("stat " + real_criu + ": " + std::strerror(errno));
  }
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  if (!(boot >> boot_id)) return internal_error("cannot read the kernel's boot id");
  return "criu " + real_criu + " dev " + std::to_string(st.st_dev) + " ino " +
         std::to_string(st.st_ino) + " size " + std::to_string(st.st_size) + " mtime " +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + " boot " +
         boot_id;
}

int run_criu_proxy(const ProxyOptions& o, const std::vector<std::string>& args) {
  if (o.real_criu.empty()) {
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
  if (client < 0 || (!o.verify && o.answers_dir.empty())) return exec_real(o.real_criu, args);

  // The client's first request says what this is; peeked, so that anything
  // the proxy does not handle is the real CRIU's from its first byte.
  std::string first(kMaxMessage, '\0');
  ssize_t n;
  do {
    n = ::recv(client, first.data(), first.size(), MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  const std::string_view peeked(first.data(), n > 0 ? n : 0);
  auto request = criu_rpc::decode(peeked);
  if (!request.ok()) return exec_real(o.real_criu, args);
  if (request->type == criu_rpc::kRestore && o.verify) {
    auto named_fds = criu_rpc::client_fds(peeked);
    if (named_fds.ok()) return restore_verified(o, client, *named_fds);
  }
  if ((request->type == criu_rpc::kVersion || request->type == criu_rpc::kFeatureCheck) &&
      !request->keep_open && !o.answers_dir.empty() && peeked.size() <= kMaxKeptRequest) {
    if (int code = answer_check(o, client, peeked, request->type); code >= 0) return code;
  }
  return exec_real(o.real_criu, args);
}

}  // namespace ferry::runtime
