// Reading a whole (small) file into memory: configuration, cgroup control
// files, /proc entries. One helper for every reader, so that all of them
// read bytes as they are (binary mode) and fail the same way.
#pragma once

#include <string>

#include "status/status.h"

namespace ferry::posix {

// NotFound ("cannot read PATH") when the file cannot be opened; callers that
// treat a missing file as empty use value_or("").
Result<std::string> read_file(const std::string& path);

}  // namespace ferry::posix
