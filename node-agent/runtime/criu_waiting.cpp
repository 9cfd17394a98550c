#include "runtime/criu_waiting.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ferry::runtime {

Result<std::unique_ptr<CriuWaitingFifo>> CriuWaitingFifo::create(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return internal_error("remove " + path + ": " + std::strerror(errno));
  }
  if (::mkfifo(path.c_str(), 0600) != 0) {
    return internal_error("mkfifo " + path + ": " + std::strerror(errno));
  }
  // Non-blocking, so the open does not wait for a writer; O_CLOEXEC, so
  // runc does not hold it too.
  posix::UniqueFd fifo(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  posix::UniqueFd closed(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fifo.valid() || !closed.valid()) {
    const std::string what = fifo.valid() ? "eventfd" : "open " + path;
    const int error = errno;
    ::unlink(path.c_str());
    return internal_error(what + ": " + std::strerror(error));
  }
  return std::unique_ptr<CriuWaitingFifo>(
      new CriuWaitingFifo(path, std::move(fifo), std::move(closed)));
}

CriuWaitingFifo::~CriuWaitingFifo() {
  ::unlink(path_.c_str());
}

bool CriuWaitingFifo::wait() {
  for (;;) {
    // A FIFO none has written to yet polls as nothing at all (no POLLHUP
    // before a first writer has come and gone), so this blocks until the
    // proxy writes or close() is called. Nobody reads the byte: it stays
    // there for every waiter.
    pollfd fds[2] = {{closed_.get(), POLLIN, 0}, {fifo_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return false;  // cannot wait: do without the late worker
    }
    if (fds[0].revents != 0) return false;
    if ((fds[1].revents & POLLIN) != 0) return true;
    if (fds[1].revents != 0) return false;  // a writer came and went without a word
  }
}

void CriuWaitingFifo::close() {
  const std::uint64_t one = 1;
  (void)!::write(closed_.get(), &one, sizeof one);
}

bool tell_criu_waiting(const std::string& path) {
  // ENXIO: no reader. ENOENT: no FIFO.
  posix::UniqueFd fifo(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fifo.valid()) return false;
  struct stat st {};
  if (::fstat(fifo.get(), &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
  return ::write(fifo.get(), "w", 1) == 1;
}

}  // namespace ferry::runtime
