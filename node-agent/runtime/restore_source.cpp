#include "runtime/restore_source.h"

#include <filesystem>

namespace ferry::runtime {

Result<PreparedRestore> prepare_from_store(const WrapperConfig& config,
                                           const RestoreRequest& request) {
  std::string dir =
      config.snapshot_root + "/" + request.migration_uid + "/" + request.container_name;
  if (!std::filesystem::exists(dir)) return not_found("no snapshot at " + dir);
  return PreparedRestore{.image_dir = dir};
}

}  // namespace ferry::runtime
