// Replacing a small file so that readers see the old or the new content,
// never a torn one: write a temporary file beside it, fsync, rename. Used
// for the files runc and ferry-runc read while Ferry may rewrite them (CRIU
// configuration files, bundle specs, restore markers).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "status/status.h"

namespace ferry::posix {

// Creates missing parent directories; on failure leaves `path` untouched.
Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

}  // namespace ferry::posix
