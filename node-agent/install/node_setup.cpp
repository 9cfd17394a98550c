#include "install/node_setup.h"

#include <sys/utsname.h>

#include <filesystem>
#include <vector>

#include "api/annotations.h"
#include "posix/atomic_file.h"
#include "posix/read_file.h"
#include "store/manifest.h"

namespace ferry::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Writes `content` at `path` unless it is there already; true when written.
Result<bool> put(const std::string& path, const std::string& content, mode_t mode) {
  if (auto have = posix::read_file(path); have.ok() && *have == content) return false;
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) {
    return internal_error("create " + fs::path(path).parent_path().string() + ": " + ec.message());
  }
  FERRY_RETURN_IF_ERROR(posix::write_file_atomic(path, content, mode));
  return true;
}

}  // namespace

Result<std::string> install_ferry_runc(const InstallOptions& o) {
  auto binary = posix::read_file(o.ferry_runc);
  if (!binary.ok()) return binary.status().with_context("install ferry-runc");
  std::string changed;
  auto wrote = put(o.host_root + "/opt/ferry/bin/ferry-runc", *binary, 0755);
  if (!wrote.ok()) return wrote.status().with_context("install ferry-runc");
  if (*wrote) changed += "installed /opt/ferry/bin/ferry-runc; ";
  json config = {{"runtime", o.host_runtime},
                 {"snapshotRoot", o.snapshot_root},
                 {"stateDir", "/run/ferry"},
                 {"snapshotWaitSeconds", 60}};
  wrote = put(o.host_root + "/etc/ferry/ferry-runc.json", config.dump(2) + "\n", 0644);
  if (!wrote.ok()) return wrote.status().with_context("configure ferry-runc");
  if (*wrote) changed += "wrote /etc/ferry/ferry-runc.json; ";
  // The handler names ferry-runc's path in containerd's config or a drop-in.
  std::vector<std::string> configs = {o.host_root + o.containerd_config};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(o.host_root + o.containerd_dropins, ec)) {
    configs.push_back(e.path().string());
  }
  for (const auto& path : configs) {
    auto text = posix::read_file(path);
    if (text.ok() && text->find("/opt/ferry/bin/ferry-runc") != std::string::npos) return changed;
  }
  return Status(Code::kFailedPrecondition,
                "containerd on this node has no `ferry` runtime handler (no BinaryName "
                "/opt/ferry/bin/ferry-runc in " +
                    o.containerd_config + " or " + o.containerd_dropins +
                    "): add it as deploy/README.md shows and restart containerd",
                "RuntimeHandlerMissing");
}

json agent_report(const checkpoint::CriuFeatures& f, const std::string& runtime_version) {
  utsname u{};
  uname(&u);
  return {{"criuVersion", f.criu_version},
          {"criuCheck", f.check_passed},
          {"lazyPages", f.uffd && f.uffd_noncoop},
          {"lazyDumpRead", f.lazy_dump_read},
          {"pageTransferTls", f.tls},
          {"memDirtyTrack", f.mem_dirty_track},
          {"networkLock", checkpoint::network_lock_method(f)},
          {"kernel", u.release},
          {"arch", u.machine},
          {"runtime", runtime_version},
          // The snapshot manifest format its dumps write and the newest its
          // ferry-runc reads: a target must read the source's.
          {"snapshotFormat", store::kManifestFormatVersion}};
}

Status withdraw_report(kube::Client& client, const std::string& node, const std::string& instance) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto got = client.get(kube::resources::kNodes, "", node);
    if (!got.ok()) return got.status().with_context("get node " + node);
    const std::string key = std::string("/metadata/annotations/") + "ferry.dev~1agent";
    const json current =
        json::parse(got->value(json::json_pointer(key), std::string("{}")), nullptr, false);
    // Another agent (this one's replacement, started while this one was
    // still stopping) reported since: its report stays.
    if (current.is_discarded() || !current.is_object() ||
        current.value("instance", "") != instance) {
      return {};
    }
    auto r = client.patch(
        kube::resources::kNodes, "", node, kube::PatchType::kMerge,
        {{"metadata",
          {{"resourceVersion", got->value(json::json_pointer("/metadata/resourceVersion"), "")},
           {"annotations", {{api::kAgentReportAnnotation, nullptr}}}}}});
    if (r.ok()) return {};
    if (r.status().code() != Code::kConflict) {
      return r.status().with_context("annotate node " + node);
    }
  }
  return Status(Code::kConflict, "node " + node + " kept changing", "Conflict");
}

Status publish_report(kube::Client& client, const std::string& node, const json& report) {
  json value = report.is_null() ? json(nullptr) : json(report.dump());
  auto r = client.patch(kube::resources::kNodes, "", node, kube::PatchType::kMerge,
                        {{"metadata", {{"annotations", {{api::kAgentReportAnnotation, value}}}}}});
  return r.ok() ? Status() : r.status().with_context("annotate node " + node);
}

}  // namespace ferry::agent
