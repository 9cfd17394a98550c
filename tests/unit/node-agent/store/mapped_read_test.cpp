// Reading snapshot files through a mapping (node-agent/store/mapped_read.h):
// the bytes of the range, clamped to the file; a stop between pieces; a file
// that shrinks under the mapping ends the read with an error and the thread
// goes on; a SIGBUS outside a guarded read still kills the process.
#include "store/mapped_read.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

namespace ferry::store {
namespace {

namespace fs = std::filesystem;

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    std::string tmpl = (fs::temp_directory_path() / "ferry-mapped-XXXXXX").string();
    fd_ = ::mkstemp(tmpl.data());
    if (fd_ < 0) std::abort();
    path_ = tmpl;
    if (::write(fd_, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
      std::abort();
    }
  }
  ~TempFile() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string path_;
};

std::string pattern(size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

// Collects what it is given (it may allocate: nothing faults while it runs).
void append(void* out, const char* data, std::size_t n) {
  static_cast<std::string*>(out)->append(data, n);
}

// Copies into room made beforehand, as a consumer that may be left by a
// fault must: no allocation inside.
struct Sink {
  std::string room;
  std::size_t used = 0;
  static void take(void* self, const char* data, std::size_t n) {
    auto* sink = static_cast<Sink*>(self);
    std::memcpy(sink->room.data() + sink->used, data, n);
    sink->used += n;
  }
};

TEST(MappedReadTest, PassesTheRangeClampedToTheFileFromAnUnalignedOffset) {
  const std::string data = pattern((3u << 20) + 123);
  TempFile file(data);
  std::string got;
  auto n =
      read_mapped(file.fd(), 4097, UINT64_MAX, append, &got, "test file", {.piece_bytes = 1 << 20});
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  EXPECT_EQ(*n, data.size() - 4097);
  EXPECT_TRUE(got == data.substr(4097));
  got.clear();
  n = read_mapped(file.fd(), 5000, 70000, append, &got, "test file");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 70000u);
  EXPECT_TRUE(got == data.substr(5000, 70000));
  n = read_mapped(file.fd(), data.size(), 10, append, &got, "test file");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);  // at the end: nothing, and no error
}

TEST(MappedReadTest, AStopEndsTheReadBetweenPieces) {
  TempFile file(pattern(4u << 20));
  struct Context {
    std::atomic<bool> stop{false};
    std::size_t calls = 0;
  } context;
  auto n = read_mapped(file.fd(), 0, UINT64_MAX,
                       [](void* c, const char*, std::size_t) {
                         auto* ctx = static_cast<Context*>(c);
                         ++ctx->calls;
                         ctx->stop = true;
                       },
                       &context, "test file", {.piece_bytes = 1 << 20, .stop = &context.stop});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u << 20);
  EXPECT_EQ(context.calls, 1u);
}

TEST(MappedReadTest, AFileThatShrinksUnderTheMappingIsAnErrorAndTheThreadGoesOn) {
  const std::string data = pattern(8u << 20);
  TempFile file(data);
  Sink sink{.room = std::string(data.size(), '\0')};
  auto n = read_mapped(file.fd(), 0, UINT64_MAX, Sink::take, &sink, "pages-1.img",
                       {.piece_bytes = 4096,
                        .after_map_for_test = [&] { ASSERT_EQ(::ftruncate(file.fd(), 4096), 0); }});
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kDataLoss);
  EXPECT_EQ(n.status().reason(), "SnapshotFileSizeMismatch");
  EXPECT_NE(n.status().message().find("pages-1.img shrank"), std::string::npos);
  EXPECT_EQ(sink.used, 4096u);  // the page still there was read, then the fault
  // The same thread reads on, and a second fault is caught as well.
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  sink.used = 0;
  n = read_mapped(file.fd(), 0, UINT64_MAX, Sink::take, &sink, "pages-1.img");
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(sink.room == data);
  sink.used = 0;
  n = read_mapped(file.fd(), 0, UINT64_MAX, Sink::take, &sink, "pages-1.img",
                  {.after_map_for_test = [&] { ASSERT_EQ(::ftruncate(file.fd(), 0), 0); }});
  EXPECT_EQ(n.status().reason(), "SnapshotFileSizeMismatch");
  EXPECT_EQ(sink.used, 0u);
}

#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer's handler was there first: it reports the fault and exits 1.
const auto kDiesOfSigbus = ::testing::ExitedWithCode(1);
constexpr const char* kSigbusMessage = "BUS";
#else
const auto kDiesOfSigbus = ::testing::KilledBySignal(SIGBUS);
constexpr const char* kSigbusMessage = "";
#endif

TEST(MappedReadTest, ASigbusOutsideAGuardedReadStillKillsTheProcess) {
  TempFile file(pattern(1u << 20));
  std::string got;
  ASSERT_TRUE(read_mapped(file.fd(), 0, UINT64_MAX, append, &got, "f").ok());  // handler in place
  EXPECT_EXIT(
      {
        void* p = ::mmap(nullptr, 1u << 20, PROT_READ, MAP_SHARED, file.fd(), 0);
        if (p == MAP_FAILED || ::ftruncate(file.fd(), 0) != 0) std::_Exit(3);
        volatile char c = static_cast<const char*>(p)[8192];
        (void)c;
        std::_Exit(0);
      },
      kDiesOfSigbus, kSigbusMessage);
}

}  // namespace
}  // namespace ferry::store
