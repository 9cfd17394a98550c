#include "store/mapped_read.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <mutex>

#include "store/store_fs.h"

namespace ferry::store {
namespace {

// The range one thread is reading through a mapping, and where a SIGBUS
// inside it returns to.
struct FaultGuard {
  sigjmp_buf resume;
  const char* begin = nullptr;
  const char* end = nullptr;
  volatile sig_atomic_t active = 0;
};

thread_local FaultGuard* t_guard = nullptr;
struct sigaction g_previous {};  // the disposition before ours, written once

void on_sigbus(int sig, siginfo_t* info, void* context) {
  FaultGuard* guard = t_guard;
  const char* address = static_cast<const char*>(info->si_addr);
  if (info->si_code > 0 && guard != nullptr && guard->active != 0 && address >= guard->begin &&
      address < guard->end) {
    guard->active = 0;
    siglongjmp(guard->resume, 1);
  }
  // Not a fault of a guarded read: what the process did before.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if ((g_previous.sa_flags & SA_SIGINFO) == 0 && g_previous.sa_handler != SIG_DFL &&
      g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // The default action. A fault repeats when this returns, and then takes
  // it; a SIGBUS someone sent is raised again.
  ::signal(SIGBUS, SIG_DFL);
  if (info->si_code <= 0) ::raise(SIGBUS);
}

void install_handler_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

// Feeds the mapped bytes to `consume` under the guard. Kept apart from
// read_mapped so that nothing with a destructor lives in a frame that
// siglongjmp leaves. Returns false when a fault ended it.
bool consume_guarded(const char* data, std::uint64_t size, MappedConsumer consume, void* context,
                     std::size_t piece_bytes, const std::atomic<bool>* stop,
                     std::uint64_t* passed) {
  FaultGuard guard;
  guard.begin = data;
  guard.end = data + size;
  t_guard = &guard;
  if (sigsetjmp(guard.resume, 1) != 0) {
    t_guard = nullptr;
    return false;
  }
  guard.active = 1;
  std::uint64_t done = 0;
  while (done < size && (stop == nullptr || !stop->load(std::memory_order_relaxed))) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(piece_bytes, size - done));
    consume(context, data + done, n);
    done += n;
    *passed = done;
  }
  guard.active = 0;
  t_guard = nullptr;
  return true;
}

}  // namespace

Result<std::uint64_t> read_mapped(int fd, std::uint64_t offset, std::uint64_t length,
                                  MappedConsumer consume, void* context, const std::string& what,
                                  const MappedReadOptions& options) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return internal::errno_status(errno, "stat " + what);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (offset >= size) return std::uint64_t{0};
  length = std::min(length, size - offset);
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t map_offset = offset & ~(page - 1);
  const std::uint64_t skip = offset - map_offset;
  const std::size_t map_bytes = static_cast<std::size_t>(skip + length);
  void* mapped =
      ::mmap(nullptr, map_bytes, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(map_offset));
  if (mapped == MAP_FAILED) {
    return Status(Code::kUnavailable, "map " + what + ": " + std::strerror(errno),
                  kMappingUnavailable);
  }
  (void)::madvise(mapped, map_bytes, MADV_SEQUENTIAL);  // a hint: more read-ahead where it reads
  install_handler_once();
  if (options.after_map_for_test) options.after_map_for_test();
  std::uint64_t passed = 0;
  const bool whole =
      consume_guarded(static_cast<const char*>(mapped) + skip, length, consume, context,
                      std::max<std::size_t>(1, options.piece_bytes), options.stop, &passed);
  ::munmap(mapped, map_bytes);
  if (!whole) {
    return Status(Code::kDataLoss, what + " shrank while it was read", "SnapshotFileSizeMismatch");
  }
  return passed;
}

}  // namespace ferry::store
