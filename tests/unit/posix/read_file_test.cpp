#include "posix/read_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ferry::posix {
namespace {

TEST(ReadFileTest, ReadsEveryByteAndNamesAMissingFile) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("ferry-read-file-" + std::to_string(getpid()));
  const std::string bytes("a\0b\r\nc", 6);  // binary: NUL and CRLF come back as they are
  std::ofstream(path, std::ios::binary) << bytes;
  auto got = read_file(path);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, bytes);
  std::filesystem::remove(path);

  auto missing = read_file(path);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "cannot read " + path);
  EXPECT_EQ(missing.value_or("fallback"), "fallback");
}

}  // namespace
}  // namespace ferry::posix
