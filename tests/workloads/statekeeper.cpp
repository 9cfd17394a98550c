// statekeeper: the stateful test workload of every checkpoint/restore test
// (CRIU zdtm style). It fills a memory region with a seeded pattern, keeps a
// counter, a listening TCP socket and an established loopback connection to
// itself, and logs a numbered tick every second, so a test can prove after a
// restore that memory, sockets and logs all carried over. It is built as a
// static binary so it runs unchanged on the host and inside node images.
//
// Protocol (one line in, one line out, on the listening socket):
//   SUM    -> "sum <hex> expected <hex>"   checksum of the region now / at start
//   INCR   -> "count <n>"                  increments the in-memory counter
//   COUNT  -> "count <n>"
//   LOOP   -> "loop ok" | "loop broken"    sends a byte over the internal
//                                          established connection and reads it back
//   PID    -> "pid <pid>"
//   HOLD   -> "held": the connection stays open (a long-lived client), so a
//             test can watch what a peer sees when the server goes away
//   CHECK  -> "check ok" | "check failed: <what>": every other kind of state
//             (below) is still intact
//
// The other state, created at start: an open file in the container's /tmp
// with a known offset; a pipe and a unix socket pair each holding unread
// data; a thread that keeps counting; a periodic timerfd; and a child
// process (a process tree) with its own memory pattern that answers over a
// pipe. CHECK verifies them without consuming them (tee, MSG_PEEK, pread).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  uint64_t mem_mib = 64;
  uint16_t port = 0;
  const char* port_file = nullptr;
  uint64_t seed = 42;
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "statekeeper: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// FNV-1a over 64-bit words: cheap, and any flipped byte changes the result.
uint64_t checksum(const uint64_t* words, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= words[i];
    h *= 1099511628211ULL;
  }
  return h;
}

void fill(uint64_t* words, size_t n, uint64_t seed) {
  uint64_t x = seed | 1;
  for (size_t i = 0; i < n; ++i) {  // xorshift64: incompressible, seed-determined
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    words[i] = x;
  }
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "statekeeper: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--mem-mib") {
      o.mem_mib = std::strtoull(value("--mem-mib"), nullptr, 10);
    } else if (a == "--port") {
      o.port = static_cast<uint16_t>(std::strtoul(value("--port"), nullptr, 10));
    } else if (a == "--port-file") {
      o.port_file = value("--port-file");
    } else if (a == "--seed") {
      o.seed = std::strtoull(value("--seed"), nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: statekeeper [--mem-mib N] [--port P] [--port-file F] [--seed S]\n");
      std::exit(2);
    }
  }
  return o;
}

int listen_on(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) fail("bind");
  if (listen(fd, 64) < 0) fail("listen");
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) fail("getsockname");
  return ntohs(addr.sin_port);
}

// An established loopback TCP connection whose both ends this process holds.
void self_connection(int listen_fd, int* client, int* server) {
  *client = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(local_port(listen_fd));
  if (connect(*client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) fail("connect");
  *server = accept(listen_fd, nullptr, nullptr);
  if (*server < 0) fail("accept");
}

bool loop_ok(int client, int server) {
  char out = 'x', in = 0;
  if (write(client, &out, 1) != 1) return false;
  pollfd p{server, POLLIN, 0};
  // A restored connection may need a retransmission (its first segment can
  // meet the restore's network lock), which takes an RTO or two: wait.
  if (poll(&p, 1, 8000) != 1) return false;
  return read(server, &in, 1) == 1 && in == out;
}

constexpr char kFileData[] = "statekeeper-file-0123456789abcdef";
constexpr off_t kFileOffset = 7;
constexpr char kPipeData[] = "unread-pipe-data";
constexpr char kSockData[] = "unread-socket-data";

struct ExtraState {
  int file = -1;
  int pipe_r = -1, pipe_w = -1;
  int sock_a = -1, sock_b = -1;
  int timer = -1;
  int child_req = -1, child_resp = -1;  // parent ends of the child's pipes
  uint64_t child_expected = 0;
  std::atomic<uint64_t>* thread_counter = nullptr;
};

// The child: its own pattern memory; answers each request byte with its
// checksum, so the parent can prove the whole tree came back.
[[noreturn]] void child_main(int req, int resp, uint64_t seed) {
  const size_t words = (4u << 20) / sizeof(uint64_t);
  std::vector<uint64_t> mem(words);
  fill(mem.data(), words, seed);
  char c;
  while (read(req, &c, 1) == 1) {
    uint64_t sum = checksum(mem.data(), words);
    if (write(resp, &sum, sizeof sum) != sizeof sum) break;
  }
  _exit(0);
}

ExtraState make_extra_state(uint64_t seed) {
  ExtraState st;
  std::string path = "/tmp/statekeeper-" + std::to_string(getpid());
  st.file = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (st.file < 0) fail("open state file");
  if (write(st.file, kFileData, sizeof kFileData) != sizeof kFileData) fail("write state file");
  lseek(st.file, kFileOffset, SEEK_SET);
  int p[2];
  if (pipe(p) < 0) fail("pipe");
  st.pipe_r = p[0];
  st.pipe_w = p[1];
  if (write(st.pipe_w, kPipeData, sizeof kPipeData) != sizeof kPipeData) fail("write pipe");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) fail("socketpair");
  st.sock_a = sv[0];
  st.sock_b = sv[1];
  if (write(st.sock_a, kSockData, sizeof kSockData) != sizeof kSockData) fail("write socket");
  st.timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  itimerspec its{{0, 10'000'000}, {0, 10'000'000}};
  timerfd_settime(st.timer, 0, &its, nullptr);
  st.thread_counter = new std::atomic<uint64_t>(0);
  std::thread([c = st.thread_counter] {
    for (;;) {
      c->fetch_add(1);
      usleep(5000);
    }
  }).detach();
  int req[2], resp[2];
  if (pipe(req) < 0 || pipe(resp) < 0) fail("child pipes");
  std::vector<uint64_t> mem((4u << 20) / sizeof(uint64_t));
  fill(mem.data(), mem.size(), seed + 1);
  st.child_expected = checksum(mem.data(), mem.size());
  pid_t child = fork();
  if (child < 0) fail("fork");
  if (child == 0) {
    close(req[1]);
    close(resp[0]);
    child_main(req[0], resp[1], seed + 1);
  }
  close(req[0]);
  close(resp[1]);
  st.child_req = req[1];
  st.child_resp = resp[0];
  return st;
}

std::string check_extra_state(const ExtraState& st) {
  // File: offset kept, content intact.
  if (lseek(st.file, 0, SEEK_CUR) != kFileOffset) return "file offset";
  char fbuf[sizeof kFileData] = {};
  if (pread(st.file, fbuf, sizeof fbuf, 0) != sizeof fbuf ||
      std::memcmp(fbuf, kFileData, sizeof fbuf) != 0) {
    return "file content";
  }
  // Pipe: the unread data is still there (tee copies without consuming).
  int scratch[2];
  if (pipe(scratch) < 0) return "scratch pipe";
  ssize_t teed = tee(st.pipe_r, scratch[1], sizeof kPipeData, SPLICE_F_NONBLOCK);
  char pbuf[sizeof kPipeData] = {};
  ssize_t got = teed > 0 ? read(scratch[0], pbuf, sizeof pbuf) : -1;
  close(scratch[0]);
  close(scratch[1]);
  if (got != sizeof pbuf || std::memcmp(pbuf, kPipeData, sizeof pbuf) != 0) return "pipe data";
  // Unix socket pair: the unread data is still queued.
  char sbuf[sizeof kSockData] = {};
  if (recv(st.sock_b, sbuf, sizeof sbuf, MSG_PEEK | MSG_DONTWAIT) != sizeof sbuf ||
      std::memcmp(sbuf, kSockData, sizeof sbuf) != 0) {
    return "socket data";
  }
  // Thread: still counting.
  uint64_t before = st.thread_counter->load();
  usleep(50'000);
  if (st.thread_counter->load() == before) return "thread stopped";
  // Timer: still firing.
  uint64_t expirations = 0;
  usleep(30'000);
  if (read(st.timer, &expirations, sizeof expirations) != sizeof expirations || expirations == 0) {
    return "timer";
  }
  // Child process: alive, with its memory.
  char go = 'x';
  uint64_t sum = 0;
  if (write(st.child_req, &go, 1) != 1) return "child request";
  pollfd p{st.child_resp, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1 || read(st.child_resp, &sum, sizeof sum) != sizeof sum) {
    return "child answer";
  }
  if (sum != st.child_expected) return "child memory";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  // Whatever descriptors the launcher leaked (a test runner's log file, say)
  // would become part of the checkpointed state: start clean.
  close_range(3, ~0U, 0);
  signal(SIGPIPE, SIG_IGN);
  // Fork the child first, so it does not inherit (and CRIU dump twice) the
  // big region.
  ExtraState extra = make_extra_state(o.seed);
  size_t bytes = o.mem_mib << 20;
  size_t words = bytes / sizeof(uint64_t);
  void* mem =
      mmap(nullptr, bytes ? bytes : 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) fail("mmap");
  auto* region = static_cast<uint64_t*>(mem);
  fill(region, words, o.seed);
  const uint64_t expected = checksum(region, words);

  int lfd = listen_on(o.port);
  int loop_client = -1, loop_server = -1;
  self_connection(lfd, &loop_client, &loop_server);
  uint16_t port = local_port(lfd);
  if (o.port_file) {
    std::string tmp = std::string(o.port_file) + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) fail("port file");
    std::fprintf(f, "%u\n", port);
    std::fclose(f);
    if (rename(tmp.c_str(), o.port_file) < 0) fail("rename port file");
  }
  std::printf("statekeeper: pid %d, %" PRIu64 " MiB, port %u, checksum %016" PRIx64 "\n", getpid(),
              o.mem_mib, port, expected);
  std::fflush(stdout);

  std::vector<int> held;  // connections kept open by HOLD
  uint64_t counter = 0, tick = 0;
  time_t next_tick = time(nullptr) + 1;
  for (;;) {
    pollfd p{lfd, POLLIN, 0};
    int r = poll(&p, 1, 200);
    if (time(nullptr) >= next_tick) {
      std::printf("tick %" PRIu64 " count %" PRIu64 "\n", ++tick, counter);
      std::fflush(stdout);
      next_tick = time(nullptr) + 1;
    }
    if (r <= 0) continue;
    int c = accept(lfd, nullptr, nullptr);
    if (c < 0) continue;
    char buf[64] = {};
    ssize_t n = 0;
    pollfd cp{c, POLLIN, 0};
    if (poll(&cp, 1, 2000) == 1) n = read(c, buf, sizeof buf - 1);
    std::string cmd(buf, n > 0 ? static_cast<size_t>(n) : 0);
    while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r')) cmd.pop_back();
    char reply[128];
    if (cmd == "SUM") {
      std::snprintf(reply, sizeof reply, "sum %016" PRIx64 " expected %016" PRIx64 "\n",
                    checksum(region, words), expected);
    } else if (cmd == "INCR") {
      std::snprintf(reply, sizeof reply, "count %" PRIu64 "\n", ++counter);
    } else if (cmd == "COUNT") {
      std::snprintf(reply, sizeof reply, "count %" PRIu64 "\n", counter);
    } else if (cmd == "LOOP") {
      std::snprintf(reply, sizeof reply, "loop %s\n",
                    loop_ok(loop_client, loop_server) ? "ok" : "broken");
    } else if (cmd == "CHECK") {
      std::string what = check_extra_state(extra);
      std::snprintf(reply, sizeof reply, "%s%s\n",
                    what.empty() ? "check ok" : "check failed: ", what.c_str());
    } else if (cmd == "HOLD") {
      (void)!write(c, "held\n", 5);
      held.push_back(c);
      continue;
    } else if (cmd == "PID") {
      std::snprintf(reply, sizeof reply, "pid %d\n", getpid());
    } else {
      std::snprintf(reply, sizeof reply, "error unknown command\n");
    }
    (void)!write(c, reply, std::strlen(reply));
    close(c);
  }
}
