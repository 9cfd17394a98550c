// bench-engine: one cold migration of a real runc container through Ferry
// (freeze, dump into the snapshot store, publish with SHA-256 of every file,
// full verification and rootfs-diff apply in ferry-runc, runc restore into a
// new bundle, rootfs and network namespace), next to raw `criu dump` and
// `criu restore` of the same workload (a statekeeper process of the same
// size) in the same run. Sizes in MiB on the command line (default 256 1024
// 2048). Then, per size, one PostCopy migration: lazy dump (everything but
// memory) into the store, restore through ferry-runc with `criu lazy-pages`
// fetching pages from the source's page server; "PostCopy freeze time" is
// from the freeze until the restored container answers, "transfer" until
// the last page arrived. The last line: total-time ratio Ferry / raw CRIU
// for 1 GiB, and the PostCopy freeze time for 1 GiB.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "checkpoint/engine.h"
#include "free_port.h"
#include "rootfs/diff.h"
#include "runc_harness.h"
#include "runtime/restore_source.h"
#include "store/snapshot_store.h"

namespace {

using namespace ferry;
using namespace ferry::testing;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Row {
  double freeze = 0, dump = 0, publish = 0, restore = 0, total = 0, image_mib = 0;
  double verify = 0;  // full SHA-256 verification alone (ferry-runc does it inside restore)
  double raw_dump = 0, raw_restore = 0, raw_total = 0;
  // PostCopy: freeze to restored-and-answering, and to the last page.
  double pc_freeze = 0, pc_pause = 0, pc_dump = 0, pc_publish = 0, pc_restore = 0, pc_transfer = 0;
  double pc_image_mib = 0;
};

// Raw CRIU on a statekeeper process of the same size.
bool raw_criu(const std::string& dir, int mib, Row& row) {
  std::string img = dir + "/raw-img";
  fs::create_directories(img);
  auto p =
      process::Subprocess::spawn({.argv = {"setsid", FERRY_STATEKEEPER_BIN, "--mem-mib",
                                           std::to_string(mib), "--port-file", dir + "/raw-port"},
                                  .new_process_group = false});
  if (!p.ok()) return false;
  int pid = p->pid();
  if (!wait_until([&] { return fs::exists(dir + "/raw-port"); }, 120s)) return false;
  auto t0 = Clock::now();
  bool ok = run_ok({tool("criu"), "dump", "-t", std::to_string(pid), "-D", img, "--tcp-established",
                    "--network-lock", "nftables", "-o", "dump.log"});
  row.raw_dump = since(t0);
  (void)p->wait(30s);  // reap the dumped process so its pid is free
  wait_until([&] { return !run_ok({"pgrep", "-s", std::to_string(pid)}); }, 30s);
  auto t1 = Clock::now();
  ok = ok && run_ok({tool("criu"), "restore", "-D", img, "--tcp-established", "--network-lock",
                     "nftables", "-d", "-o", "restore.log"});
  row.raw_restore = since(t1);
  row.raw_total = row.raw_dump + row.raw_restore;
  run_ok({"pkill", "-9", "-s", std::to_string(pid)});
  fs::remove(fs::path("/tmp") / ("statekeeper-" + std::to_string(pid)));
  return ok;
}

bool ferry_migration(const std::string& dir, int mib, Row& row) {
  std::string image = dir + "/image";
  prepare_lab(dir, FERRY_STATEKEEPER_BIN);
  PodIdentity src_pod{.name = "src", .uid = "uid-src"}, dst_pod{.name = "dst", .uid = "uid-dst"};
  std::string migration = "bench-" + std::to_string(mib);

  NetNs ns_a("fbench-a"), ns_b("fbench-b");
  OverlayRootfs ra(image, dir + "/ra"), rb(image, dir + "/rb");
  write_bundle(dir + "/bundle-a", ra.merged(), ns_a, mib, src_pod);
  write_bundle(dir + "/bundle-b", rb.merged(), ns_b, mib, dst_pod, migration);
  ShimContainer a("bench-a", dir + "/bundle-a", dir + "/runc", FERRY_RUNC_BIN);
  if (a.create_and_start() != 0) return false;
  if (!wait_until([&] { return ask(ns_a.name(), "PID") == "pid 1"; }, 120s)) return false;
  std::string sum = ask(ns_a.name(), "SUM");

  checkpoint::RuncCli runc(tool("runc"), dir + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  // A live migration's snapshot need not be durable (see StoreOptions).
  store::SnapshotStore snapshots(dir + "/snapshots", {.durable_data = false});
  auto t0 = Clock::now();
  auto writer = snapshots.begin({.binding = {.namespace_name = "default",
                                             .pod_name = "dst",
                                             .pod_uid = "uid-dst",
                                             .container_name = "app",
                                             .migration_uid = migration}});
  if (!writer.ok()) return false;
  (*writer)->hash_while_written();  // as the agent does (source_snapshot.cpp)
  auto dumped = engine.dump({.container_id = a.id(),
                             .image_dir = (*writer)->dir(),
                             .work_dir = dir + "/work-a",
                             .tcp = checkpoint::TcpMode::kEstablished});
  if (!dumped.ok()) {
    std::fprintf(stderr, "dump: %s\n", dumped.status().to_string().c_str());
    return false;
  }
  row.freeze = dumped->freeze.count();
  row.dump = dumped->dump.count();
  row.image_mib = dumped->image_bytes / 1048576.0;
  auto t_pub = Clock::now();
  if (!rootfs::capture_upper_dir(ra.upper(), (*writer)->dir() + "/rootfs-diff").ok()) return false;
  (void)(*writer)->add_file("restore-options.json", R"({"tcpEstablished":true})");
  if (!(*writer)->publish().ok()) return false;
  row.publish = since(t_pub);
  // What the verification inside ferry-runc's restore costs on its own.
  auto t_verify = Clock::now();
  auto verified = snapshots.open(migration, "app",
                                 {.namespace_name = "default",
                                  .pod_name = "dst",
                                  .pod_uid = "uid-dst",
                                  .container_name = "app",
                                  .migration_uid = migration},
                                 store::Verify::kFull);
  row.verify = since(t_verify);
  if (!verified.ok()) return false;
  verified = ferry::Status(ferry::Code::kCancelled, "released");
  auto t_restore = Clock::now();
  ShimContainer b("bench-b", dir + "/bundle-b", dir + "/runc", FERRY_RUNC_BIN);
  if (b.create_and_start() != 0) return false;
  if (!wait_until([&] { return ask(ns_b.name(), "PID") == "pid 1"; }, 120s)) return false;
  row.restore = since(t_restore);
  row.total = since(t0) - row.verify;  // the separate verify above is not part of a migration
  bool same = ask(ns_b.name(), "SUM") == sum;
  (void)engine.kill_frozen(a.id());
  return same;
}

// One PostCopy migration: the restored container answers before its
// memory arrived; the checksum is compared after the transfer.
bool postcopy_migration(const std::string& dir, int mib, Row& row) {
  std::string image = dir + "/image";
  prepare_lab(dir, FERRY_STATEKEEPER_BIN);
  PodIdentity src_pod{.name = "src", .uid = "uid-src"}, dst_pod{.name = "dst", .uid = "uid-dst"};
  std::string migration = "bench-pc-" + std::to_string(mib);

  NetNs ns_a("fbench-pa"), ns_b("fbench-pb");
  OverlayRootfs ra(image, dir + "/ra"), rb(image, dir + "/rb");
  write_bundle(dir + "/bundle-a", ra.merged(), ns_a, mib, src_pod);
  write_bundle(dir + "/bundle-b", rb.merged(), ns_b, mib, dst_pod, migration);
  ShimContainer a("bench-pa", dir + "/bundle-a", dir + "/runc", FERRY_RUNC_BIN);
  if (a.create_and_start() != 0) return false;
  if (!wait_until([&] { return ask(ns_a.name(), "PID") == "pid 1"; }, 120s)) return false;
  std::string sum = ask(ns_a.name(), "SUM");

  checkpoint::RuncCli runc(tool("runc"), dir + "/runc");
  checkpoint::CheckpointEngine engine(runc);
  store::SnapshotStore snapshots(dir + "/snapshots", {.durable_data = false});
  auto writer = snapshots.begin({.binding = {.namespace_name = "default",
                                             .pod_name = "dst",
                                             .pod_uid = "uid-dst",
                                             .container_name = "app",
                                             .migration_uid = migration}});
  if (!writer.ok()) return false;
  auto t0 = Clock::now();
  auto dumped = engine.dump_lazy({.container_id = a.id(),
                                  .work_dir = dir + "/work-a",
                                  .page_server = "127.0.0.1:" + std::to_string(*free_port()),
                                  .tcp = checkpoint::TcpMode::kEstablished,
                                  .before_publish = [&](store::SnapshotWriter& w) -> ferry::Status {
                                    auto diff = rootfs::capture_upper_dir(ra.upper(),
                                                                          w.dir() + "/rootfs-diff");
                                    return diff.ok() ? ferry::Status() : diff.status();
                                  }},
                                 **writer);
  if (!dumped.ok()) {
    std::fprintf(stderr, "lazy dump: %s\n", dumped.status().to_string().c_str());
    return false;
  }
  row.pc_pause = dumped->freeze.count();
  row.pc_dump = dumped->dump.count();
  row.pc_publish = dumped->publish.count();
  row.pc_image_mib = dumped->image_bytes / 1048576.0;
  auto t_restore = Clock::now();
  ShimContainer b("bench-pb", dir + "/bundle-b", dir + "/runc", FERRY_RUNC_BIN);
  if (b.create_and_start() != 0) {
    std::fprintf(stderr, "postcopy restore failed: %s\n",
                 dumped->transfer->wait(0ms).to_string().c_str());
    return false;
  }
  if (!wait_until([&] { return ask(ns_b.name(), "COUNT") == "count 0"; }, 120s)) return false;
  row.pc_restore = since(t_restore);
  row.pc_freeze = since(t0);
  bool early = !dumped->transfer->finished();
  ferry::Status transferred = dumped->transfer->wait(10min);
  row.pc_transfer = since(t0);
  if (!transferred.ok()) {
    std::fprintf(stderr, "page transfer: %s\n", transferred.to_string().c_str());
    return false;
  }
  if (!early) std::fprintf(stderr, "note: %d MiB: transfer ended before the first answer\n", mib);
  bool same = ask(ns_b.name(), "SUM") == sum;
  (void)engine.kill_frozen(a.id());
  return same;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {256, 1024, 2048};
  std::map<int, Row> rows;
  for (int mib : sizes) {
    char tmpl[] = "/var/tmp/ferry-bench-XXXXXX";  // disk, not tmpfs: like shared storage
    if (mkdtemp(tmpl) == nullptr) return 1;
    std::string dir = tmpl;
    Row row;
    bool ok = ferry_migration(dir + "/ferry", mib, row) && raw_criu(dir, mib, row) &&
              postcopy_migration(dir + "/postcopy", mib, row);
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (!ok) {
      std::fprintf(stderr, "bench-engine: %d MiB run failed\n", mib);
      return 1;
    }
    rows[mib] = row;
    std::printf(
        "%5d MiB  ferry: freeze %.3f s, dump %.2f s, publish %.2f s, restore %.2f s (incl. "
        "verify), total %.2f "
        "s (full verify alone: %.2f s), images %.0f MiB | raw criu: dump %.2f s, restore %.2f s, "
        "total %.2f s | ratio %.2f\n",
        mib, row.freeze, row.dump, row.publish, row.restore, row.total, row.verify, row.image_mib,
        row.raw_dump, row.raw_restore, row.raw_total, row.total / row.raw_total);
    std::printf(
        "%5d MiB  postcopy: freeze time %.3f s (freeze %.3f s + lazy dump %.3f s + publish %.3f s "
        "+ "
        "restore until answering %.3f s), transfer done at %.2f s, images %.2f MiB\n",
        mib, row.pc_freeze, row.pc_pause, row.pc_dump, row.pc_publish, row.pc_restore,
        row.pc_transfer, row.pc_image_mib);
    std::fflush(stdout);
  }
  if (rows.contains(1024)) {
    const Row& r = rows[1024];
    std::printf(
        "ferry/raw-criu total time for 1 GiB (cold): %.2f s / %.2f s = %.2f; "
        "PostCopy freeze time for 1 GiB: %.3f s\n",
        r.total, r.raw_total, r.total / r.raw_total, r.pc_freeze);
  }
  return 0;
}
