#include "runtime/pod_logs.h"

#include <filesystem>

namespace ferry::runtime {

std::string current_container_log(const std::string& pod_log_root, const std::string& ns,
                                  const std::string& pod, const std::string& pod_uid,
                                  const std::string& container) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(pod_log_root) / (ns + "_" + pod + "_" + pod_uid) / container;
  std::error_code ec;
  fs::path newest;
  fs::file_time_type newest_time{};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".log" || !e.is_regular_file(ec)) continue;
    const auto t = e.last_write_time(ec);
    if (newest.empty() || t > newest_time) {
      newest = e.path();
      newest_time = t;
    }
  }
  return newest.string();
}

}  // namespace ferry::runtime
