#include "runtime/restore_source.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "rootfs/diff.h"
#include "runtime/pod_logs.h"
#include "store/hashing.h"
#include "store/snapshot_store.h"

namespace ferry::runtime {

namespace {

Status verify_memory_images(const std::string& dir, const store::Manifest& manifest,
                            const std::vector<std::string>& files, store::LateStart* criu_waits) {
  const std::string what = "snapshot " + dir;
  // Before the restore, nothing else runs: every CPU.
  if (criu_waits == nullptr) return store::verify_checksums(dir, manifest, files, 0, what);
  // Beside it, CRIU restores on one core, the critical path: the
  // verification takes the others (at least one), and one more worker
  // takes CRIU's core once CRIU waits at post-restore for the verdict
  // (session 9, 2 cores, 1 GiB, SHA-256: without one, the verdict came
  // 0.34 s after CRIU had every page in place), not before (session 18).
  return store::verify_checksums(dir, manifest, files, store::cpus_beside_criu(), what, criu_waits);
}

// Best effort: a restore never fails for want of old log lines.
void carry_log(const WrapperConfig& config, const RestoreRequest& request,
               const std::string& carried) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(carried, ec)) return;
  const std::string newest =
      current_container_log(config.pod_log_root, request.pod_namespace, request.pod_name,
                            request.pod_uid, request.container_name);
  if (newest.empty()) return;
  std::ifstream in(carried, std::ios::binary);
  std::ofstream out(newest, std::ios::binary | std::ios::app);
  out << in.rdbuf();
  if (!out) std::fprintf(stderr, "ferry-runc: could not carry the log into %s\n", newest.c_str());
}

}  // namespace

Result<PreparedRestore> prepare_from_store(const WrapperConfig& config,
                                           const RestoreRequest& request) {
  store::SnapshotStore snapshots(config.snapshot_root);
  store::Binding expected{.namespace_name = request.pod_namespace,
                          .pod_name = request.pod_name,
                          .pod_uid = request.pod_uid,
                          .container_name = request.container_name,
                          .migration_uid = request.migration_uid};
  // Every byte is checked: a corrupted image restores a process with wrong
  // memory, which is worse than no restore at all. The memory images are
  // checked while CRIU reads them, before the process runs (criu_proxy.h):
  // ferry-runc runs verify_unverified beside runc.
  auto snapshot = snapshots.open(request.migration_uid, request.container_name, expected,
                                 store::Verify::kFull, is_criu_memory_image);
  if (!snapshot.ok()) return snapshot.status();
  auto applied =
      rootfs::apply_diff(snapshot->dir + "/" + std::string(kRootfsDiffDir), request.rootfs);
  if (!applied.ok()) return applied.status().with_context("apply rootfs diff");
  carry_log(config, request, snapshot->dir + "/" + std::string(kCarriedLogFile));
  auto held = std::make_shared<store::VerifiedSnapshot>(std::move(snapshot).value());
  PreparedRestore prepared{.image_dir = held->dir, .unverified = held->unverified};
  prepared.verify_unverified = [held](store::LateStart* criu_waits) {
    return verify_memory_images(held->dir, held->manifest, held->unverified, criu_waits);
  };
  prepared.hold = held;
  prepared.inherit_fd = held->lease.fd();
  // How the source dumped, so the restore matches (verified with the rest).
  std::ifstream in(held->dir + "/" + std::string(kRestoreOptionsFile));
  auto options = nlohmann::json::parse(in, nullptr, false);
  if (!options.is_discarded() && options.is_object()) {
    prepared.tcp_established = options.value("tcpEstablished", false);
    prepared.lazy_pages = options.value("lazyPages", false);
    prepared.page_server = options.value("pageServer", "");
    prepared.page_transfer_tls = options.value("pageTransferTls", false);
  }
  return prepared;
}

bool is_criu_memory_image(const std::string& rel_path) {
  constexpr std::string_view kPrefix = "pages-", kSuffix = ".img";
  std::string_view p = rel_path;
  if (p.size() <= kPrefix.size() + kSuffix.size() || !p.starts_with(kPrefix) ||
      !p.ends_with(kSuffix)) {
    return false;
  }
  p = p.substr(kPrefix.size(), p.size() - kPrefix.size() - kSuffix.size());
  return p.find_first_not_of("0123456789") == std::string_view::npos;
}

}  // namespace ferry::runtime
