#include "checkpoint/source_snapshot.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "posix/mountinfo.h"
#include "posix/read_file.h"
#include "rootfs/diff.h"

namespace ferry::checkpoint {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Result<std::string> overlay_upper_dir(const std::string& mount_point,
                                      const std::string& mountinfo) {
  auto text = posix::read_file(mountinfo);
  if (!text.ok()) return internal_error(text.status().message());
  std::string found;
  for (const auto& m : posix::parse_mountinfo(*text)) {
    if (m.mount_point != mount_point || m.fstype != "overlay") continue;
    std::istringstream opts(m.super_options);
    for (std::string opt; std::getline(opts, opt, ',');) {
      if (opt.rfind("upperdir=", 0) == 0) found = opt.substr(9);  // last mount wins
    }
  }
  if (found.empty()) return not_found("no overlay mount with an upperdir at " + mount_point);
  return found;
}

Result<SourceSnapshotResult> snapshot_container(OciRuntime& runtime,
                                                const SourceSnapshotRequest& req) {
  auto state = runtime.state(req.container_id);
  if (!state.ok()) return state.status();
  auto upper = overlay_upper_dir(state->bundle + "/rootfs");
  if (!upper.ok()) return upper.status().with_context("writable layer of " + req.container_id);

  store::SnapshotStore snapshots(req.snapshot_root,
                                 {.digest_algorithm = req.digest_algorithm, .durable_data = false});
  auto writer = snapshots.begin({.binding = req.binding,
                                 .criu_version = req.criu_version,
                                 .runtime = {"runc", req.runtime_version}});
  if (!writer.ok()) return writer.status();
  (*writer)->hash_while_written();  // CRIU's images, as it writes them
  CheckpointEngine engine(runtime);
  auto dumped = engine.dump({.container_id = req.container_id,
                             .image_dir = (*writer)->dir(),
                             .work_dir = req.work_dir,
                             .tcp = req.tcp,
                             .network_lock = req.network_lock});
  if (!dumped.ok()) return dumped.status();
  auto start = Clock::now();
  auto diff = rootfs::capture_upper_dir(*upper, (*writer)->dir() + "/rootfs-diff");
  if (!diff.ok()) return diff.status().with_context("capture writable layer");
  nlohmann::json options = {{"tcpEstablished", req.tcp == TcpMode::kEstablished}};
  FERRY_RETURN_IF_ERROR((*writer)->add_file("restore-options.json", options.dump()));
  std::error_code ec;
  if (!req.log_file.empty() && fs::is_regular_file(req.log_file, ec)) {
    // The name runtime/restore_source.h reads (kCarriedLogFile).
    FERRY_RETURN_IF_ERROR((*writer)->add_file_from("container.log", req.log_file));
  }
  auto manifest = (*writer)->publish();
  if (!manifest.ok()) return manifest.status();
  SourceSnapshotResult result;
  result.dump = *dumped;
  result.publish = Clock::now() - start;
  result.snapshot_dir =
      snapshots.snapshot_dir(req.binding.migration_uid, req.binding.container_name);
  result.bytes = manifest->total_bytes();
  return result;
}

}  // namespace ferry::checkpoint
