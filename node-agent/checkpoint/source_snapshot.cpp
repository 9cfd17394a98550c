#include "checkpoint/source_snapshot.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/criu_stats.h"
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

namespace {

// What a snapshot carries beside CRIU's images, whatever the mode: the
// writable layer and the container's log.
Status add_layer_and_log(store::SnapshotWriter& writer, const std::string& upper_dir,
                         const std::string& log_file) {
  auto diff = rootfs::capture_upper_dir(upper_dir, writer.dir() + "/rootfs-diff");
  if (!diff.ok()) return diff.status().with_context("capture writable layer");
  std::error_code ec;
  if (!log_file.empty() && fs::is_regular_file(log_file, ec)) {
    // The name runtime/restore_source.h reads (kCarriedLogFile).
    FERRY_RETURN_IF_ERROR(writer.add_file_from("container.log", log_file));
  }
  return {};
}

store::SnapshotStore store_for(const SourceSnapshotRequest& req) {
  return store::SnapshotStore(req.snapshot_root,
                              {.digest_algorithm = req.digest_algorithm, .durable_data = false});
}

}  // namespace

Result<LazySourceSnapshotResult> snapshot_container_lazy(OciRuntime& runtime,
                                                         const SourceSnapshotRequest& req,
                                                         const std::string& page_server,
                                                         bool read_pages_on_request) {
  auto state = runtime.state(req.container_id);
  if (!state.ok()) return state.status();
  auto upper = overlay_upper_dir(state->bundle + "/rootfs");
  if (!upper.ok()) return upper.status().with_context("writable layer of " + req.container_id);
  store::SnapshotStore snapshots = store_for(req);
  auto writer = snapshots.begin({.binding = req.binding,
                                 .criu_version = req.criu_version,
                                 .runtime = {"runc", req.runtime_version}});
  if (!writer.ok()) return writer.status();
  // A retried attempt must not find the last one's images (dump_lazy
  // refuses a non-empty directory rather than mix two dumps).
  std::error_code ec;
  fs::remove_all(req.work_dir + "/images", ec);
  fs::remove(req.work_dir + "/" + kCriuDumpStatsFile, ec);  // read once the pages are served
  CheckpointEngine engine(runtime);
  auto dumped = engine.dump_lazy(
      {.container_id = req.container_id,
       .work_dir = req.work_dir,
       .page_server = page_server,
       .tcp = req.tcp,
       .network_lock = req.network_lock,
       .before_publish =
           [&](store::SnapshotWriter& w) { return add_layer_and_log(w, *upper, req.log_file); },
       .read_pages_on_request = read_pages_on_request},
      **writer);
  if (!dumped.ok()) return dumped.status();
  LazySourceSnapshotResult result;
  result.snapshot_dir =
      snapshots.snapshot_dir(req.binding.migration_uid, req.binding.container_name);
  result.bytes = dumped->image_bytes;
  result.dump = std::move(dumped).value();
  return result;
}

Result<SourceSnapshotResult> snapshot_container(OciRuntime& runtime,
                                                const SourceSnapshotRequest& req) {
  auto state = runtime.state(req.container_id);
  if (!state.ok()) return state.status();
  auto upper = overlay_upper_dir(state->bundle + "/rootfs");
  if (!upper.ok()) return upper.status().with_context("writable layer of " + req.container_id);

  store::SnapshotStore snapshots = store_for(req);
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
  FERRY_RETURN_IF_ERROR(add_layer_and_log(**writer, *upper, req.log_file));
  nlohmann::json options = {{"tcpEstablished", req.tcp == TcpMode::kEstablished}};
  FERRY_RETURN_IF_ERROR((*writer)->add_file("restore-options.json", options.dump()));
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
