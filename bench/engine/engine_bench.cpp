// bench-engine: one cold migration of a real runc container through Ferry
// (freeze, dump into the snapshot store, publish with a digest of every file,
// verification and rootfs-diff apply in ferry-runc, runc restore into a new
// bundle, rootfs and network namespace, the memory images verified during
// the restore by the CRIU proxy), next to raw `criu dump` and `criu restore`
// of the same workload (a statekeeper process of the same size) in the same
// run, and `runc checkpoint` + `runc restore` of the same container (what
// any container C/R costs, without Ferry). Every restore is timed until the
// restored process answers a probe.
// Sizes in MiB on the command line (default 256 1024 2048). Then, per
// size, PostCopy migrations: lazy dump (everything but memory) into the
// store, restore through ferry-runc with `criu lazy-pages` fetching pages
// from the source's page server over mutual TLS (as the agent does), once
// with CRIU reading pages from the frozen source on request (our CRIU
// patch, where the CRIU has it) and once with stock CRIU's splice mode
// (every page into pipes while frozen), and the first again in clear text
// (what TLS costs); the three take turns going first. "PostCopy freeze time" is
// from the freeze (the start of the pause call: the application's downtime)
// until the restored container answers, "transfer" until the last page
// arrived; what the agent does before it freezes (the runtime's state,
// CRIU's config, the TLS credentials) is printed apart as "prepare". The last line: total-time
// ratio Ferry / raw CRIU for 1 GiB, and the PostCopy freeze time for 1 GiB. Before the results, the
// machine's cost of an anonymous page fault (page_fault_cost), which sets
// every restore's time.
// Environment: FERRY_BENCH_DIGEST (blake3, sha256; default: the agent's),
// FERRY_BENCH_ROUNDS (7), FERRY_BENCH_DIR (/var/tmp; `make
// bench-engine` uses /dev/shm), FERRY_BENCH_KEEP=1 keeps the run's
// directories (CRIU logs) for a look afterwards, FERRY_BENCH_NETWORK_LOCK
// (iptables, nftables; default: what the agent picks) for Ferry's dumps,
// FERRY_BENCH_PAGE_REPORTING=on (keep a VM guest's free page reporting on;
// see PageReportingOff), FERRY_BENCH_EACH_ROUND=1 (print every round's
// times, not only the medians), FERRY_BENCH_COLD_ONLY=1 (no PostCopy rows: for
// looking at Cold alone).
#include <arpa/inet.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <tuple>

#include "checkpoint/checkpoint_cgroups.h"
#include "checkpoint/criu_features.h"
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

// CPU time the whole machine spent busy (every process and the kernel; not
// idle, not waiting for I/O), in seconds: on 2 cores, what Ferry adds beside
// CRIU shows here before it shows in the wall-clock times.
double machine_busy_seconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return static_cast<double>(user + nice + system + irq + softirq + steal) / ticks;
}

// One timed step: wall seconds and the machine's busy CPU seconds since it
// began.
struct Step {
  double busy = machine_busy_seconds();
  Clock::time_point start = Clock::now();
  double wall() const { return since(start); }
  double cpu() const { return machine_busy_seconds() - busy; }
};

// Every timed dump starts with no dirty page cache pending: otherwise one
// path pays for the write-back of the images the previous one wrote (seen
// here: 1 GiB dumps from 0.7 s to 3.2 s depending on what ran before).
void settle() {
  ::sync();
}

// How often a timed restore is probed for its first answer (a refused
// connect costs microseconds; the probe is a TCP round trip from this
// process, no process start).
constexpr auto kProbeEvery = 5ms;

// CRIU's network lock for Ferry's dumps: the agent's choice on this node,
// unless FERRY_BENCH_NETWORK_LOCK names one (iptables, nftables) to compare.
std::string network_lock() {
  const char* forced = std::getenv("FERRY_BENCH_NETWORK_LOCK");
  return forced != nullptr ? forced : agent_network_lock();
}

// The snapshot digest for Ferry's migrations: the agent's default, unless
// FERRY_BENCH_DIGEST names one (blake3, sha256) to compare.
store::DigestAlgorithm bench_digest() {
  const char* forced = std::getenv("FERRY_BENCH_DIGEST");
  if (forced == nullptr) return store::kDefaultDigestAlgorithm;
  auto algorithm = store::parse_digest_algorithm(forced);
  if (!algorithm) {
    std::fprintf(stderr, "FERRY_BENCH_DIGEST must be blake3 or sha256, not '%s'\n", forced);
    std::exit(2);
  }
  return *algorithm;
}

struct Row {
  double freeze = 0, dump = 0, publish = 0, restore = 0, total = 0, image_mib = 0;
  double verify = 0;  // full digest verification alone (ferry-runc does it inside restore)
  double raw_dump = 0, raw_restore = 0, raw_total = 0;
  // runc's own C/R of the same container (runc_baseline).
  double runc_dump = 0, runc_restore = 0, runc_total = 0;
  // Machine-wide busy CPU seconds (machine_busy_seconds) over each timed step:
  // Ferry's dump includes its publish.
  double cpu_dump = 0, cpu_restore = 0, raw_cpu_dump = 0, raw_cpu_restore = 0;
  double runc_cpu_dump = 0, runc_cpu_restore = 0;
  // PostCopy: freeze to restored-and-answering, and to the last page; with
  // CRIU reading pages on request (our patch, what Ferry uses where its
  // CRIU has it) and with stock CRIU's splice mode (the baseline), both
  // over TLS as Ferry transfers pages; and the first again in clear text,
  // the baseline for what TLS costs.
  struct PostCopy {
    double prepare = 0, freeze = 0, pause = 0, dump = 0, publish = 0, restore = 0, transfer = 0;
    double image_mib = 0;
  };
  PostCopy pc, pc_splice, pc_clear;
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
  settle();
  const Step dump;
  // --leave-running, like Ferry's dump (the source stays, frozen, until the
  // target runs): without it CRIU also kills the process and the kernel
  // frees its memory inside the timed dump (0.2-1.8 s more for 1 GiB here).
  bool ok = run_ok({tool("criu"), "dump", "-t", std::to_string(pid), "-D", img, "--tcp-established",
                    "--network-lock", "nftables", "--leave-running", "-o", "dump.log"});
  row.raw_dump = dump.wall();
  row.raw_cpu_dump = dump.cpu();
  run_ok({"pkill", "-9", "-s", std::to_string(pid)});
  (void)p->wait(30s);  // reap the dumped process so its pid is free
  wait_until([&] { return !run_ok({"pgrep", "-s", std::to_string(pid)}); }, 30s);
  const Step restore;
  ok = ok && run_ok({tool("criu"), "restore", "-D", img, "--tcp-established", "--network-lock",
                     "nftables", "-d", "-o", "restore.log"});
  // Until the restored process answers, probed as Ferry's restore is (one
  // TCP round trip from this process), so that both restores end at the
  // same point.
  std::ifstream port_file(dir + "/raw-port");
  std::string port;
  port_file >> port;
  ok = ok &&
       wait_until([&] { return ask_port("", std::stoi(port), "COUNT").rfind("count ", 0) == 0; },
                  120s, kProbeEvery);
  row.raw_restore = restore.wall();
  row.raw_cpu_restore = restore.cpu();
  row.raw_total = row.raw_dump + row.raw_restore;
  run_ok({"pkill", "-9", "-s", std::to_string(pid)});
  fs::remove(fs::path("/tmp") / ("statekeeper-" + std::to_string(pid)));
  return ok;
}

// The container floor: `runc checkpoint` and `runc restore` of the same
// statekeeper container, with the flags ferry-runc gives runc and the same
// CRIU network lock, into a new bundle, rootfs and network namespace, timed
// until the restored container answers, like Ferry's. It does what any
// container C/R does and raw CRIU on a host process does not (the mount
// namespace and its tmpfs contents, the external network namespace, runc
// itself), and nothing of Ferry's own (snapshot store, hashing, binding,
// verification, the CRIU proxy). The writable layer is copied to the new
// rootfs outside the timing (Ferry's includes it). Like raw CRIU, the source
// is killed before the restore, so the restore may reuse its memory.
bool runc_baseline(const std::string& dir, int mib, Row& row) {
  std::string image = dir + "/image";
  prepare_lab(dir, FERRY_STATEKEEPER_BIN);
  PodIdentity pod{.name = "base", .uid = "uid-base"};
  NetNs ns_a("fbench-ra"), ns_b("fbench-rb");
  OverlayRootfs ra(image, dir + "/ra"), rb(image, dir + "/rb");
  // runc reads CRIU options it has no flags for from org.criu.config.
  const std::string criu_conf = dir + "/criu.conf";
  const std::string lock = network_lock();
  std::ofstream(criu_conf) << (lock.empty() ? "" : "network-lock " + lock + "\n");
  for (const auto& [bundle, rootfs, ns] : {std::tuple{dir + "/bundle-a", ra.merged(), &ns_a},
                                           std::tuple{dir + "/bundle-b", rb.merged(), &ns_b}}) {
    json spec = make_spec(rootfs, ns->path(), mib, pod);
    spec["annotations"]["org.criu.config"] = criu_conf;
    fs::create_directories(bundle);
    std::ofstream(bundle + "/config.json") << spec.dump();
  }
  const std::string runc = tool("runc"), root = dir + "/runc";
  ShimContainer a("base-a", dir + "/bundle-a", root, runc);
  if (a.create_and_start() != 0) return false;
  if (!wait_until([&] { return ask(ns_a.name(), "PID") == "pid 1"; }, 120s)) return false;
  const std::string sum = ask(ns_a.name(), "SUM");
  settle();
  const Step dump;
  // Paused first, as Ferry's engine does: CRIU freezing a running cgroup
  // itself polls its state every 100 ms (criu/seize.c).
  bool ok = run_ok({runc, "--root", root, "pause", a.id()});
  ok = ok && run_ok({runc, "--root", root, "checkpoint", "--image-path", dir + "/img",
                     "--work-path", dir + "/work-a", "--leave-running", "--tcp-established",
                     "--manage-cgroups-mode", "ignore", a.id()});
  row.runc_dump = dump.wall();
  row.runc_cpu_dump = dump.cpu();
  if (!ok) {
    std::fprintf(stderr, "runc checkpoint failed (%s/work-a/dump.log)\n", dir.c_str());
    return false;
  }
  run_ok({runc, "--root", root, "kill", "--all", a.id(), "KILL"});
  wait_until([&] { return a.state_status() == "stopped"; }, 30s);
  if (!rootfs::capture_upper_dir(ra.upper(), dir + "/diff").ok() ||
      !rootfs::apply_diff(dir + "/diff", rb.merged()).ok()) {
    return false;
  }
  ShimContainer b("base-b", dir + "/bundle-b", root, runc);  // its destructor kills and deletes
  const Step restore;
  ok = b.restore(dir + "/img", dir + "/work-b",
                 {"--manage-cgroups-mode", "ignore", "--tcp-established"}) == 0 &&
       wait_until([&] { return ask(ns_b.name(), "PID") == "pid 1"; }, 120s, kProbeEvery);
  row.runc_restore = restore.wall();
  row.runc_cpu_restore = restore.cpu();
  row.runc_total = row.runc_dump + row.runc_restore;
  if (!ok) std::fprintf(stderr, "runc restore failed (%s/work-b/restore.log)\n", dir.c_str());
  const bool same = ok && ask(ns_b.name(), "SUM") == sum;
  return same;
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
  // Dumps run as the agent runs them: in a cgroup of their own
  // (checkpoint/checkpoint_cgroups.h).
  auto dumps = checkpoint::CheckpointCgroups::discover("ferry-bench-checkpoint");
  if (!dumps.ok()) return false;
  runc.run_checkpoints_in(*dumps);
  struct RemoveCgroups {  // each container's went when its dump ended
    const checkpoint::CheckpointCgroups& cgroups;
    ~RemoveCgroups() {
      for (const auto& d : cgroups.dirs()) ::rmdir(d.c_str());
    }
  } remove_cgroups{*dumps};
  checkpoint::CheckpointEngine engine(runc);
  // A live migration's snapshot need not be durable (see StoreOptions).
  store::SnapshotStore snapshots(dir + "/snapshots",
                                 {.digest_algorithm = bench_digest(), .durable_data = false});
  // The agent picks its network lock once at start (node-agent/main.cpp),
  // not per migration: outside the timing.
  const std::string lock = network_lock();
  settle();
  const Step dump;  // through the publish
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
                             .tcp = checkpoint::TcpMode::kEstablished,
                             .network_lock = lock});
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
  row.cpu_dump = dump.cpu();
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
  const Step restore;
  ShimContainer b("bench-b", dir + "/bundle-b", dir + "/runc", FERRY_RUNC_BIN);
  if (b.create_and_start() != 0) return false;
  if (!wait_until([&] { return ask(ns_b.name(), "PID") == "pid 1"; }, 120s, kProbeEvery)) {
    return false;
  }
  row.restore = restore.wall();
  row.cpu_restore = restore.cpu();
  row.total = dump.wall() - row.verify;  // the separate verify above is not part of a migration
  bool same = ask(ns_b.name(), "SUM") == sum;
  (void)engine.kill_frozen(a.id());
  return same;
}

// One PostCopy migration: the restored container answers before its
// memory arrived; the checksum is compared after the transfer.
// read_mode: LazyDumpRequest::read_pages_on_request; tls: encrypt_transfer.
bool postcopy_migration(const std::string& dir, int mib, bool read_mode, bool tls,
                        Row::PostCopy& row) {
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
  const std::string lock = network_lock();  // once per agent, as above
  const std::string page_server = "127.0.0.1:" + std::to_string(*free_port());
  settle();
  auto t0 = Clock::now();
  auto dumped = engine.dump_lazy({.container_id = a.id(),
                                  .work_dir = dir + "/work-a",
                                  .page_server = page_server,
                                  .tcp = checkpoint::TcpMode::kEstablished,
                                  .network_lock = lock,
                                  .before_publish = [&](store::SnapshotWriter& w) -> ferry::Status {
                                    auto diff = rootfs::capture_upper_dir(ra.upper(),
                                                                          w.dir() + "/rootfs-diff");
                                    return diff.ok() ? ferry::Status() : diff.status();
                                  },
                                  .read_pages_on_request = read_mode,
                                  .encrypt_transfer = tls},
                                 **writer);
  if (!dumped.ok()) {
    std::fprintf(stderr, "lazy dump: %s\n", dumped.status().to_string().c_str());
    return false;
  }
  if (dumped->pages_read_on_request != read_mode) {
    std::fprintf(stderr, "lazy dump: asked for %s mode, CRIU ran the other\n",
                 read_mode ? "read" : "splice");
    return false;
  }
  row.prepare = std::chrono::duration<double>(dumped->frozen_at - t0).count();
  row.pause = dumped->freeze.count();
  row.dump = dumped->dump.count();
  row.publish = dumped->publish.count();
  row.image_mib = dumped->image_bytes / 1048576.0;
  auto t_restore = Clock::now();
  ShimContainer b("bench-pb", dir + "/bundle-b", dir + "/runc", FERRY_RUNC_BIN);
  if (b.create_and_start() != 0) {
    std::fprintf(stderr, "postcopy restore failed: %s\n",
                 dumped->transfer->wait(0ms).to_string().c_str());
    return false;
  }
  if (!wait_until([&] { return ask(ns_b.name(), "COUNT") == "count 0"; }, 120s, kProbeEvery)) {
    return false;
  }
  row.restore = since(t_restore);
  row.freeze = since(dumped->frozen_at);
  bool early = !dumped->transfer->finished();
  ferry::Status transferred = dumped->transfer->wait(10min);
  row.transfer = since(dumped->frozen_at);
  if (!transferred.ok()) {
    std::fprintf(stderr, "page transfer: %s\n", transferred.to_string().c_str());
    return false;
  }
  if (!early) std::fprintf(stderr, "note: %d MiB: transfer ended before the first answer\n", mib);
  bool same = ask(ns_b.name(), "SUM") == sum;
  (void)engine.kill_frozen(a.id());
  return same;
}

// CRIU caches its kernel feature probes (kerndat) in /run/criu.kdat, and
// only on a tmpfs (criu/kerndat.c). On a node /run is one (systemd; our
// cluster's nodes mount it so), and on such a host every criu call but the
// first loads the cache. On a host where /run is a plain directory, every
// call probes again, a fixed cost no node pays, billed to Ferry (which
// starts criu three times per PostCopy migration) and raw CRIU alike. So
// the bench gives itself a private tmpfs /run in its own mount namespace
// (before any thread starts), as on a node, and prints what a probe costs.
std::string private_tmpfs_run() {
  struct statfs st {};
  if (::statfs("/run", &st) == 0 && st.f_type == TMPFS_MAGIC) return "/run is a tmpfs";
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) ||
      ::mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
    return std::string("/run is not a tmpfs and could not be made one here (") +
           std::strerror(errno) + "): every criu call probes the kernel";
  }
  return "/run is a private tmpfs for this run, as on a node";
}

// A VM guest with free page reporting (virtio-balloon) hands freed memory
// back to the hypervisor, and whatever allocates after that faults every
// page in from the host again: measured here, a 2 GiB restore took 5.2 s
// with it and 1.1 s without, and raw CRIU escaped it because its restore
// reuses the memory of the process it just killed, while Ferry's source is
// still frozen. That is the hypervisor billing whichever step allocates
// last, not work a migration does, so the bench turns reporting off for the
// run (page_reporting_order above the largest order) and puts the setting
// back at exit; FERRY_BENCH_PAGE_REPORTING=on keeps it as it is.
class PageReportingOff {
 public:
  PageReportingOff() {
    const char* keep = std::getenv("FERRY_BENCH_PAGE_REPORTING");
    std::ifstream in(kKnob);
    if (!(in >> saved_)) {
      note_ = "guest free page reporting: not present";
    } else if (keep != nullptr && std::string(keep) == "on") {
      note_ = "guest free page reporting: left on (page_reporting_order " + saved_ + ")";
      saved_.clear();
    } else if (std::ofstream out(kKnob); !(out << "11" << std::flush)) {
      note_ =
          "guest free page reporting: could not turn it off (page_reporting_order " + saved_ + ")";
      saved_.clear();
    } else {
      note_ = "guest free page reporting: off for this run (page_reporting_order " + saved_ +
              " -> 11, put back at exit; FERRY_BENCH_PAGE_REPORTING=on keeps it)";
    }
  }
  ~PageReportingOff() {
    if (!saved_.empty()) std::ofstream(kKnob) << saved_;
  }
  PageReportingOff(const PageReportingOff&) = delete;
  PageReportingOff& operator=(const PageReportingOff&) = delete;
  const std::string& note() const { return note_; }
  bool turned_off() const { return !saved_.empty(); }

 private:
  static constexpr const char* kKnob = "/sys/module/page_reporting/parameters/page_reporting_order";
  std::string saved_, note_;
};

// Memory freed before the run was reported to the hypervisor already, and
// the first round to allocate it again paid for that: with reporting off,
// round 1 of each size was 2-4x slower than the rest on session 18's
// guest, raw CRIU included (a 1 GiB raw restore 1.91 s against 0.47 s).
// So, once reporting is off, the memory the run will use (about six times
// the largest container: its memory, the images of three C/Rs, the
// restored copies) is faulted in once and freed, and stays the guest's.
std::string warm_guest_memory(int largest_mib) {
  std::uint64_t available_kib = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    if (key == "MemAvailable:") {
      meminfo >> available_kib;
      break;
    }
  }
  constexpr std::uint64_t kKeepFree = std::uint64_t{2} << 30;
  const std::uint64_t available = available_kib * 1024;
  if (available <= kKeepFree) return "guest memory: not warmed up (too little available)";
  const std::uint64_t bytes = std::min(
      available - kKeepFree, std::uint64_t{6} * static_cast<std::uint64_t>(largest_mib) << 20);
  const auto t = Clock::now();
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return "guest memory: not warmed up (mmap failed)";
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
  if (::madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
    auto* b = static_cast<volatile char*>(p);
    for (std::uint64_t off = 0; off < bytes; off += 4096) b[off] = 1;
  }
  ::munmap(p, bytes);
  char line[160];
  std::snprintf(line, sizeof line,
                "guest memory: %.1f GiB faulted in and freed before the first round, in %.2f s",
                static_cast<double>(bytes) / (1 << 30), since(t));
  return line;
}

// The machine's cost of an anonymous page fault, printed with the results:
// a restore maps the process's memory and faults every page in, so on a
// guest whose page tables the hypervisor shadows (a PVM guest: session 8's
// VM, ~12 us a fault) every restore, Ferry's, runc's and raw CRIU's alike,
// costs seconds per GiB, and results from two machines only compare with
// this next to them. Touches 256 MiB once, in 4 KiB steps, no huge pages.
std::string page_fault_cost() {
  constexpr std::size_t kBytes = std::size_t{256} << 20;
  constexpr std::size_t kPage = 4096;
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return "anonymous page faults: not measured (mmap failed)";
  (void)::madvise(p, kBytes, MADV_NOHUGEPAGE);
  auto* bytes = static_cast<volatile char*>(p);
  const auto t = Clock::now();
  for (std::size_t off = 0; off < kBytes; off += kPage) bytes[off] = 1;
  const double seconds = since(t);
  ::munmap(p, kBytes);
  constexpr std::size_t kFaults = kBytes / kPage;
  char line[160];
  std::snprintf(line, sizeof line,
                "anonymous page faults: %.2f us each (256 MiB touched in %.3f s; a restore "
                "faults in every page it restores)",
                seconds * 1e6 / static_cast<double>(kFaults), seconds);
  return line;
}

double timed_criu_check() {
  auto t = Clock::now();
  (void)run_ok({tool("criu"), "check"});
  return since(t);
}

}  // namespace

// A round's directory, removed when the round ends however it ends
// (FERRY_BENCH_KEEP keeps it, for CRIU's logs).
struct RoundDir {
  std::string path;
  ~RoundDir() {
    std::error_code ec;
    if (!std::getenv("FERRY_BENCH_KEEP")) fs::remove_all(path, ec);
  }
};

// The benchmark; main() turns an exception into one line and exit 1 after
// unwinding, so that PageReportingOff puts the guest's knob back and each
// round's directory is removed (std::terminate would do neither).
int run(int argc, char** argv) {
  const std::string run_dir = private_tmpfs_run();
  const double first_check = timed_criu_check();
  const double cached_check = timed_criu_check();
  std::printf("criu kerndat cache: %s; `criu check` %.3f s, then %.3f s\n", run_dir.c_str(),
              first_check, cached_check);
  const PageReportingOff page_reporting;
  std::printf("%s\n", page_reporting.note().c_str());
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {256, 1024, 2048};
  if (page_reporting.turned_off()) {
    std::printf("%s\n", warm_guest_memory(*std::max_element(sizes.begin(), sizes.end())).c_str());
  }
  std::printf("%s\n", page_fault_cost().c_str());
  // Several rounds per size, Ferry and raw CRIU alternating, and the
  // median of each number: single runs on one disk vary by 2x, and on
  // session 12's VM single 1 GiB ratios swung 1.02-1.28 with 3-round
  // medians landing either side of 1.15 (bench/results/engine.md).
  const char* rounds_env = std::getenv("FERRY_BENCH_ROUNDS");
  const int rounds = std::max(1, rounds_env ? std::atoi(rounds_env) : 7);
  const char* bench_dir = std::getenv("FERRY_BENCH_DIR");
  std::printf("snapshot store and CRIU images on %s; Ferry's snapshot digest: %s\n",
              bench_dir ? bench_dir : "/var/tmp",
              std::string(store::digest_algorithm_name(bench_digest())).c_str());
  // PostCopy with our CRIU's read mode where it has it, and always with
  // stock CRIU's splice mode in the same round (the baseline).
  auto features = checkpoint::detect_criu_features(tool("criu"));
  const bool read_mode = features.ok() && features->lazy_dump_read;
  std::printf("PostCopy: %s\n",
              read_mode ? "CRIU reads lazy pages on request (lazy-dump-mode read), and stock "
                          "CRIU's splice mode in the same round"
                        : "this CRIU has no lazy-dump-mode read: splice mode only");
  const bool cold_only = std::getenv("FERRY_BENCH_COLD_ONLY") != nullptr;
  std::map<int, Row> rows;
  for (int mib : sizes) {
    std::vector<Row> runs;
    std::string ratios;
    for (int round = 0; round < rounds; ++round) {
      // Disk by default, like shared storage; FERRY_BENCH_DIR=/dev/shm
      // takes the disk's variance out and leaves CPU costs.
      std::string dir = (bench_dir ? bench_dir : "/var/tmp") + std::string("/ferry-bench-XXXXXX");
      if (mkdtemp(dir.data()) == nullptr) return 1;
      const RoundDir remove_at_end{dir};
      Row row;
      // Which goes first alternates: the second writes to a disk the first
      // just filled, and must not always be the same one.
      bool ok = round % 2 == 0
                    ? ferry_migration(dir + "/ferry", mib, row) && raw_criu(dir, mib, row)
                    : raw_criu(dir, mib, row) && ferry_migration(dir + "/ferry", mib, row);
      ok = ok && runc_baseline(dir + "/runc-base", mib, row);
      // The PostCopy variants take turns going first.
      const std::function<bool()> postcopies[] = {
          [&] { return !read_mode || postcopy_migration(dir + "/pc", mib, true, true, row.pc); },
          [&] { return postcopy_migration(dir + "/pc-splice", mib, false, true, row.pc_splice); },
          [&] {
            return postcopy_migration(dir + "/pc-clear", mib, read_mode, false, row.pc_clear);
          },
      };
      for (int i = 0; i < 3 && !cold_only; ++i) ok = ok && postcopies[(round + i) % 3]();
      if (!ok) {
        std::fprintf(stderr, "bench-engine: %d MiB run failed\n", mib);
        return 1;
      }
      if (std::getenv("FERRY_BENCH_EACH_ROUND") != nullptr) {
        std::printf(
            "    round %d (%s first): ferry dump %.2f + publish %.2f + restore %.2f = %.2f s; "
            "raw criu dump %.2f + restore %.2f = %.2f s; runc %.2f + %.2f s | busy CPU-s "
            "ferry %.2f + %.2f, raw %.2f + %.2f, runc %.2f + %.2f\n",
            round + 1, round % 2 == 0 ? "ferry" : "raw", row.dump, row.publish, row.restore,
            row.total, row.raw_dump, row.raw_restore, row.raw_total, row.runc_dump,
            row.runc_restore, row.cpu_dump, row.cpu_restore, row.raw_cpu_dump, row.raw_cpu_restore,
            row.runc_cpu_dump, row.runc_cpu_restore);
      }
      runs.push_back(row);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.2f", ratios.empty() ? "" : ", ",
                    row.total / row.raw_total);
      ratios += buf;
    }
    // The median over the rounds of what `get` reads from a round's Row.
    auto median = [&](auto get) {
      std::vector<double> v;
      v.reserve(runs.size());
      for (const auto& r : runs) v.push_back(get(r));
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    Row row;
    for (double Row::*field :
         {&Row::freeze, &Row::dump, &Row::publish, &Row::restore, &Row::total, &Row::image_mib,
          &Row::verify, &Row::raw_dump, &Row::raw_restore, &Row::raw_total, &Row::runc_dump,
          &Row::runc_restore, &Row::runc_total}) {
      row.*field = median([&](const Row& r) { return r.*field; });
    }
    for (Row::PostCopy Row::*mode : {&Row::pc, &Row::pc_splice, &Row::pc_clear}) {
      for (double Row::PostCopy::*field :
           {&Row::PostCopy::prepare, &Row::PostCopy::freeze, &Row::PostCopy::pause,
            &Row::PostCopy::dump, &Row::PostCopy::publish, &Row::PostCopy::restore,
            &Row::PostCopy::transfer, &Row::PostCopy::image_mib}) {
        row.*mode.*field = median([&](const Row& r) { return r.*mode.*field; });
      }
    }
    rows[mib] = row;
    std::printf(
        "%5d MiB  ferry: freeze %.3f s, dump %.2f s, publish %.2f s, restore %.2f s (incl. "
        "verify), total %.2f "
        "s (full verify alone: %.2f s), images %.0f MiB | raw criu: dump %.2f s, restore %.2f s, "
        "total %.2f s | ratio %.2f (medians of %d rounds; per round: %s)\n",
        mib, row.freeze, row.dump, row.publish, row.restore, row.total, row.verify, row.image_mib,
        row.raw_dump, row.raw_restore, row.raw_total, row.total / row.raw_total, rounds,
        ratios.c_str());
    std::printf(
        "%5d MiB  runc C/R of the same container: dump %.2f s, restore %.2f s, total %.2f s | "
        "ferry/runc %.2f, runc/raw criu %.2f\n",
        mib, row.runc_dump, row.runc_restore, row.runc_total, row.total / row.runc_total,
        row.runc_total / row.raw_total);
    auto print_postcopy = [&](const Row::PostCopy& pc, const char* how) {
      std::printf(
          "%5d MiB  postcopy (%s): freeze time %.3f s (freeze %.3f s + lazy dump %.3f s + "
          "publish %.3f s + restore until answering %.3f s), transfer done at %.2f s, images "
          "%.2f MiB; prepare before freezing %.3f s\n",
          mib, how, pc.freeze, pc.pause, pc.dump, pc.publish, pc.restore, pc.transfer, pc.image_mib,
          pc.prepare);
    };
    if (read_mode && !cold_only) print_postcopy(row.pc, "CRIU reads pages on request, over TLS");
    if (!cold_only) {
      print_postcopy(row.pc_splice, "stock CRIU, pages spliced while frozen, over TLS");
      print_postcopy(row.pc_clear, read_mode ? "CRIU reads pages on request, in clear text"
                                             : "stock CRIU, in clear text");
    }
    std::fflush(stdout);
  }
  if (rows.contains(1024)) {
    const Row& r = rows[1024];
    std::printf(
        "ferry/raw-criu total time for 1 GiB (cold): %.2f s / %.2f s = %.2f; "
        "PostCopy freeze time for 1 GiB: %.3f s (%s)\n",
        r.total, r.raw_total, r.total / r.raw_total, read_mode ? r.pc.freeze : r.pc_splice.freeze,
        read_mode ? "CRIU reading pages on request" : "stock CRIU's splice mode");
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-engine: %s\n", e.what());
    return 1;
  }
}
