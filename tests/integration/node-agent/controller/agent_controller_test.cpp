// The node agent's Kubernetes loop (node-agent/controller) in process, with
// nothing faked below it: a real kube-apiserver + etcd holding Ferry's CRDs,
// and a real runc container (the statekeeper, created through ferry-runc as
// containerd's shim would) that the agent freezes and dumps with real CRIU.
// No kubelet and no operator run: the test writes what they would (the pod
// and its status, the Migration's phases). The only artificial piece is a
// transport that fails chosen API calls of the agent (fault_injecting_transport.h),
// to show what the agent leaves behind when the API lets it down halfway:
// a frozen source stays frozen and is not dumped twice, nothing is frozen
// before the Migration is held by the finalizer, a restarted agent rolls
// back what it cannot trust, and a finished Migration leaves no container,
// snapshot, finalizer or record behind.
#include "controller/agent_controller.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <memory>
#include <thread>

#include "api/annotations.h"
#include "api/migration.h"
#include "checkpoint/checkpoint_cgroups.h"
#include "checkpoint/criu_features.h"
#include "checkpoint/oci_runtime.h"
#include "control_plane.h"
#include "controller/records.h"
#include "fault_injecting_transport.h"
#include "kube_client.h"
#include "runc_harness.h"
#include "wait_until.h"

#ifndef FERRY_RUNC_BIN
#error "FERRY_RUNC_BIN must name the ferry-runc binary"
#endif
#ifndef FERRY_STATEKEEPER_BIN
#error "FERRY_STATEKEEPER_BIN must name the statekeeper binary"
#endif
#ifndef FERRY_CRD_DIR
#error "FERRY_CRD_DIR must name the crds/ directory"
#endif

namespace ferry::testing {
namespace {

using namespace std::chrono_literals;
using kube::json;

const kube::ResourceType kMigrations{"ferry.dev", "v1alpha1", "migrations", "Migration", true};
constexpr const char* kNs = "default";
// The agent's client retries a 503 this many times before its caller sees it.
constexpr int kClientRetries = 3;
// Generous: a loaded 2-core machine, a real apiserver and CRIU.
constexpr auto kDeadline = 60s;
// Where the agent's dumps run (checkpoint_cgroups.h).
constexpr char kCheckpointCgroup[] = "ferry-test-checkpoint";

// The source pod: its API object and the real container behind it.
struct SourcePod {
  std::string name;
  std::string uid;
  std::unique_ptr<NetNs> netns;
  std::unique_ptr<OverlayRootfs> rootfs;
  std::unique_ptr<BindMount> bundle_rootfs;
  std::unique_ptr<ShimContainer> container;
};

// Inode and modification time of a file: the same pair means it was not
// written again.
std::pair<ino_t, int64_t> identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {0, 0};
  return {st.st_ino, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// Whether `pid` is gone (or a zombie: it runs no code any more).
bool process_gone(int pid) {
  const char state = process_state(pid);
  return state == 'Z' || state == 'X';
}

// The processes the kernel lists in cgroup directory `cgroup_dir`.
std::vector<int> cgroup_pids(const std::string& cgroup_dir) {
  std::vector<int> pids;
  std::ifstream in(cgroup_dir + "/cgroup.procs");
  int pid = 0;
  while (in >> pid) pids.push_back(pid);
  return pids;
}

// The directory of `pid`'s freezer cgroup (v1) or cgroup (v2).
std::string cgroup_dir_of(int pid) {
  const bool v2 = cgroup_version() == 2;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (v2 && line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
    if (const auto at = line.find(":freezer:"); !v2 && at != std::string::npos) {
      return "/sys/fs/cgroup/freezer" + line.substr(at + 9);
    }
  }
  return {};
}

class AgentControllerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& cp = ControlPlaneEnvironment::get();
    auto applied = cp.kubectl({"apply", "-f", FERRY_CRD_DIR});
    ASSERT_TRUE(applied.ok() && applied->exit_code == 0)
        << (applied.ok() ? applied->err : applied.status().to_string());
    auto established = cp.kubectl({"wait", "--for=condition=Established", "--timeout=60s",
                                   "crd/migrations.ferry.dev", "crd/migrationpolicies.ferry.dev"});
    ASSERT_TRUE(established.ok() && established->exit_code == 0);
  }

  void SetUp() override {
    if (expected_cgroup_version() != 0) {
      ASSERT_EQ(cgroup_version(), expected_cgroup_version())
          << "/sys/fs/cgroup is not the hierarchy this run is for";
    }
    char tmpl[] = "/tmp/ferry-agentctl-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    prepare_lab(dir_, FERRY_STATEKEEPER_BIN);
    // One node per test, so the agent of one test never sees another's
    // pods or Migrations.
    static int serial = 0;
    tag_ = std::to_string(::getpid()) + "-" + std::to_string(++serial);
    node_ = "agent-" + tag_;
    auto& cp = ControlPlaneEnvironment::get();
    client_ = client_for(cp);
    ASSERT_NE(client_, nullptr);
    auto config = kube::load_kubeconfig(cp.kubeconfig_path());
    ASSERT_TRUE(config.ok()) << config.status().to_string();
    // The agent's client: real retries of 503s, with short waits.
    auto agent_client = faulty_client(*config, faults_,
                                      {.user_agent = "ferry-agent-test",
                                       .max_retries = kClientRetries,
                                       .retry_base = 20ms,
                                       .retry_cap = 200ms});
    ASSERT_TRUE(agent_client.ok()) << agent_client.status().to_string();
    agent_client_ = std::move(agent_client).value();
    runc_ = std::make_unique<checkpoint::RuncCli>(tool("runc"), dir_ + "/runc");
    auto dumps = checkpoint::CheckpointCgroups::discover(kCheckpointCgroup);
    ASSERT_TRUE(dumps.ok()) << dumps.status().to_string();
    runc_->run_checkpoints_in(*dumps);  // as the agent's main does
  }

  void TearDown() override {
    stop_agent();
    source_.container.reset();  // kills and deletes it
    source_.bundle_rootfs.reset();
    source_.rootfs.reset();
    source_.netns.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    // The dumps' cgroup goes too (each container's went when its dump ended).
    if (auto dumps = checkpoint::CheckpointCgroups::discover(kCheckpointCgroup); dumps.ok()) {
      for (const auto& d : dumps->dirs()) ::rmdir(d.c_str());
    }
  }

  // ---- the agent

  void start_agent() {
    agent_ = std::make_unique<agent::AgentController>(
        *agent_client_, *runc_,
        agent::AgentOptions{
            .node = node_,
            .snapshot_root = dir_ + "/snapshots",
            .work_dir = dir_ + "/work",
            .records_dir = records_dir(),
            .pod_log_root = dir_ + "/pod-logs",
            .criu_network_lock = agent_network_lock(),
            .page_server_address = page_server_address_,
            .criu_features = criu_features_,
            .on_checkpoint = [this](const agent::CheckpointSample&) { ++checkpoints_; },
            .on_page_transfer = [this](bool ok,
                                       double) { ++(ok ? transfers_ok_ : transfers_failed_); }});
    agent_thread_ = std::jthread([this](std::stop_token stop) { agent_->run(stop); });
    ASSERT_TRUE(wait_until([&] { return agent_->synced(); }, kDeadline)) << "informers synced";
  }

  // Stops the agent as a restart would: its records stay on disk.
  void stop_agent() {
    if (agent_thread_.joinable()) {
      agent_thread_.request_stop();
      agent_thread_.join();
    }
    agent_.reset();
  }

  // ---- the source pod, as kubelet would run and report it

  // Creates pod `name` on the agent's node (with the ferry.dev/serving gate
  // when `gate`), starts its container and reports it running.
  void start_source(const std::string& name, bool gate) {
    json pod = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", name}, {"namespace", kNs}}},
                {"spec",
                 {{"nodeName", node_},
                  {"containers", {{{"name", "app"}, {"image", "ferry.local/statekeeper:dev"}}}}}}};
    if (gate) pod["spec"]["readinessGates"] = {{{"conditionType", api::kServingCondition}}};
    auto created = client_->create(kube::resources::kPods, kNs, pod);
    ASSERT_TRUE(created.ok()) << created.status().to_string();
    source_.name = name;
    source_.uid = (*created)["metadata"]["uid"];

    source_.netns = std::make_unique<NetNs>("fc-" + tag_);
    source_.rootfs = std::make_unique<OverlayRootfs>(dir_ + "/image", dir_ + "/rootfs-src");
    ASSERT_TRUE(source_.rootfs->mounted());
    const std::string bundle = dir_ + "/bundle-src";
    source_.bundle_rootfs =
        std::make_unique<BindMount>(source_.rootfs->merged(), bundle + "/rootfs");
    ASSERT_TRUE(source_.bundle_rootfs->mounted());
    write_bundle(bundle, bundle + "/rootfs", *source_.netns, 16,
                 {.ns = kNs, .name = name, .uid = source_.uid, .container = "app"});
    source_.container =
        std::make_unique<ShimContainer>("src-" + tag_, bundle, dir_ + "/runc", FERRY_RUNC_BIN);
    ASSERT_EQ(source_.container->create_and_start(), 0) << read_file(source_.container->log_path());
    ASSERT_TRUE(wait_until([&] { return ask(source_.netns->name(), "PID") == "pid 1"; }, kDeadline))
        << source_.container->output();
    ASSERT_EQ(source_.container->freezer(), "thawed");

    json status = {
        {"status",
         {{"phase", "Running"},
          {"containerStatuses",
           {{{"name", "app"},
             {"containerID", "containerd://" + source_.container->id()},
             {"image", "ferry.local/statekeeper:dev"},
             {"imageID", "ferry.local/statekeeper@sha256:" + std::string(64, '0')},
             {"ready", true},
             {"restartCount", 0},
             {"started", true},
             {"state",
              {{"running", {{"startedAt", api::rfc3339_now().substr(0, 19) + "Z"}}}}}}}}}}};
    auto reported = client_->patch(kube::resources::kPods, kNs, name, kube::PatchType::kMerge,
                                   status, {.subresource = "status"});
    ASSERT_TRUE(reported.ok()) << reported.status().to_string();
  }

  bool answers() { return ask(source_.netns->name(), "PID") == "pid 1"; }
  std::string freezer() { return source_.container->freezer(); }

  // The pod's ferry.dev/serving condition: "True", "False", or "" if none.
  std::string serving() {
    auto pod = client_->get(kube::resources::kPods, kNs, source_.name);
    if (!pod.ok()) return "(" + pod.status().to_string() + ")";
    for (const auto& c : pod->value(json::json_pointer("/status/conditions"), json::array())) {
      if (c.value("type", "") == api::kServingCondition) return c.value("status", "");
    }
    return "";
  }
  std::string serving_reason() {
    auto pod = client_->get(kube::resources::kPods, kNs, source_.name);
    if (!pod.ok()) return "";
    for (const auto& c : pod->value(json::json_pointer("/status/conditions"), json::array())) {
      if (c.value("type", "") == api::kServingCondition) return c.value("reason", "");
    }
    return "";
  }

  // ---- Migrations, as the operator would write them

  // Creates Migration `name` of the source pod with this node as its
  // source, and hands it to the agents: Checkpointing, with the bare pod's
  // replacement already created (its name and uid in status).
  std::string create_migration(const std::string& name, const std::string& mode = "Cold") {
    json m = {{"apiVersion", "ferry.dev/v1alpha1"},
              {"kind", "Migration"},
              {"metadata",
               {{"name", name},
                {"namespace", kNs},
                {"labels",
                 {{api::kSourceNodeLabel, node_}, {api::kTargetNodeLabel, "elsewhere-" + tag_}}}}},
              {"spec", {{"podName", source_.name}}}};
    auto created = client_->create(kMigrations, kNs, m);
    EXPECT_TRUE(created.ok()) << created.status().to_string();
    if (!created.ok()) return "";
    operator_moves(
        name, "Checkpointing",
        {{"sourceNode", node_},
         {"targetNode", "elsewhere-" + tag_},
         {"sourcePodUID", source_.uid},
         {"targetPod", source_.name + "-moved"},
         {"targetPodUID", kTargetPodUid},
         {"effective",
          {{"policy", ""}, {"mode", mode}, {"completionSeconds", 600}, {"progressSeconds", 120}}}});
    return (*created)["metadata"]["uid"];
  }

  // Moves Migration `name` to `phase` (with its transition and `extra`
  // status fields), re-reading on conflicts with the agent's writes.
  void operator_moves(const std::string& name, const std::string& phase, json extra = {}) {
    std::string last_error;
    bool moved = wait_until(
        [&] {
          auto got = client_->get(kMigrations, kNs, name);
          if (!got.ok()) return false;
          json transitions =
              got->value(json::json_pointer("/status/phaseTransitionTimestamps"), json::array());
          transitions.push_back({{"phase", phase}, {"time", api::rfc3339_now()}});
          json status = extra.is_object() ? extra : json::object();
          status["phase"] = phase;
          status["phaseTransitionTimestamps"] = transitions;
          json body = {{"metadata", {{"resourceVersion", (*got)["metadata"]["resourceVersion"]}}},
                       {"status", status}};
          auto r = client_->patch(kMigrations, kNs, name, kube::PatchType::kMerge, body,
                                  {.subresource = "status"});
          if (!r.ok()) last_error = r.status().to_string();
          return r.ok();
        },
        kDeadline);
    ASSERT_TRUE(moved) << name << " to " << phase << ": " << last_error;
  }

  json migration(const std::string& name) {
    auto got = client_->get(kMigrations, kNs, name);
    return got.ok() ? *got : json::object();
  }
  std::string phase(const std::string& name) {
    return migration(name).value(json::json_pointer("/status/phase"), std::string());
  }
  std::string field(const std::string& name, const char* pointer) {
    return migration(name).value(json::json_pointer(pointer), std::string());
  }
  bool held(const std::string& name) {
    for (const auto& f :
         migration(name).value(json::json_pointer("/metadata/finalizers"), json::array())) {
      if (f == api::kSnapshotFinalizer) return true;
    }
    return false;
  }
  // Waits until Migration `name` is in `wanted`; the object on failure.
  ::testing::AssertionResult reaches(const std::string& name, const std::string& wanted) {
    if (wait_until([&] { return phase(name) == wanted; }, kDeadline)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << name << " never reached " << wanted << ": " << migration(name).dump(2);
  }

  // ---- what the agent keeps on the node and on shared storage

  std::string records_dir() const { return dir_ + "/records"; }
  bool has_record(const std::string& uid) const {
    return fs::exists(records_dir() + "/" + uid + ".json");
  }
  std::string manifest(const std::string& uid) const {
    return dir_ + "/snapshots/" + uid + "/app/manifest.json";
  }
  bool has_snapshot(const std::string& uid) const { return fs::exists(dir_ + "/snapshots/" + uid); }

  static std::string read_file(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  std::string dir_, tag_, node_;
  std::unique_ptr<kube::Client> client_;  // the test's own: kubelet's and the operator's writes
  std::shared_ptr<FaultPlan> faults_ = std::make_shared<FaultPlan>();
  std::unique_ptr<kube::Client> agent_client_;
  std::unique_ptr<checkpoint::RuncCli> runc_;
  std::unique_ptr<agent::AgentController> agent_;
  std::jthread agent_thread_;
  std::atomic<int> checkpoints_{0};
  std::atomic<int> transfers_ok_{0}, transfers_failed_{0};  // on_page_transfer
  SourcePod source_;
  checkpoint::CriuFeatures criu_features_;         // AgentOptions::criu_features
  std::string page_server_address_ = "127.0.0.1";  // AgentOptions::page_server_address
  static constexpr const char* kTargetPodUid = "00000000-0000-4000-8000-111111111111";

  // ---- PostCopy

  // Skips (saying why) where CRIU cannot do PostCopy; else notes whether
  // it reads pages on request, as the agent's main does.
  void require_postcopy() {
    auto features = checkpoint::detect_criu_features(tool("criu"));
    ASSERT_TRUE(features.ok()) << features.status().to_string();
    if (!features->uffd || !features->uffd_noncoop) {
      GTEST_SKIP() << "no userfaultfd lazy pages on this kernel: PostCopy untestable here";
    }
    criu_features_ = *features;
  }
  // The published snapshot's restore options (the page server's address).
  json restore_options(const std::string& uid) const {
    return json::parse(read_file(dir_ + "/snapshots/" + uid + "/app/restore-options.json"), nullptr,
                       false);
  }
  // The Migration's condition `type`: "True", "False", or "" if none.
  std::string condition(const std::string& name, const std::string& type) {
    for (const auto& c :
         migration(name).value(json::json_pointer("/status/conditions"), json::array())) {
      if (c.value("type", "") == type) return c.value("status", "");
    }
    return "";
  }
  // Waits until Migration `name` reports the failure `reason`.
  ::testing::AssertionResult fails_with(const std::string& name, const std::string& reason) {
    if (wait_until([&] { return field(name, "/status/failure/reason") == reason; }, kDeadline)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << name << " never reported " << reason << ": " << migration(name).dump(2);
  }
};

// The dump is done and published, but the status write that hands the
// Migration to the target fails: the source must stay frozen (two copies
// must never run), and the retry must write the status, not dump again.
TEST_F(AgentControllerTest, StatusWriteAfterTheDumpFailsKeepsTheSourceFrozenAndDumpsOnce) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-status", /*gate=*/true));
  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(wait_until([&] { return serving() == "True"; }, kDeadline))
      << "a pod not migrating serves";
  const int fault = faults_->add({.match = {"PATCH", "/migrations/m-status/status", true}});
  const std::string uid = create_migration("m-status");

  // Two whole reconciles failed on the write (each after the client's retries).
  ASSERT_TRUE(
      wait_until([&] { return faults_->failures(fault) >= 2 * (kClientRetries + 1); }, kDeadline))
      << "failed status writes: " << faults_->failures(fault);
  EXPECT_EQ(checkpoints_.load(), 1);
  EXPECT_EQ(freezer(), "frozen");
  EXPECT_EQ(source_.container->state_status(), "paused");
  ASSERT_TRUE(fs::exists(manifest(uid))) << "the snapshot is published";
  EXPECT_TRUE(has_record(uid));
  EXPECT_TRUE(held("m-status"));
  EXPECT_EQ(serving(), "False") << "out of its Services while frozen";
  EXPECT_EQ(phase("m-status"), "Checkpointing");
  const auto published = identity(manifest(uid));

  faults_->heal(fault);
  ASSERT_TRUE(reaches("m-status", "Restoring"));
  EXPECT_EQ(checkpoints_.load(), 1) << "not dumped again";
  EXPECT_EQ(identity(manifest(uid)), published) << "the snapshot was not published again";
  EXPECT_EQ(freezer(), "frozen") << "frozen until the operator decides";
  EXPECT_EQ(source_.container->state_status(), "paused");
}

// The same failure; what the status must say once the write lands: the
// bytes and times of the dump, which the retry takes from the record (it
// wrote only the phase before the record kept them).
TEST_F(AgentControllerTest, StatusWriteAfterTheDumpFailsStillReportsBytesAndTimings) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-timings", /*gate=*/true));
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const int fault = faults_->add(
      {.match = {"PATCH", "/migrations/m-timings/status", true}, .times = kClientRetries + 1});
  create_migration("m-timings");
  ASSERT_TRUE(reaches("m-timings", "Restoring"));
  EXPECT_EQ(faults_->failures(fault), kClientRetries + 1) << "the write failed once in full";
  const json m = migration("m-timings");
  EXPECT_GT(m.value(json::json_pointer("/status/bytes/checkpointed"), int64_t{0}), 0) << m.dump(2);
  EXPECT_GT(m.value(json::json_pointer("/status/bytes/transferred"), int64_t{0}), 0) << m.dump(2);
  EXPECT_NE(field("m-timings", "/status/durations/freeze"), "") << m.dump(2);
  EXPECT_NE(field("m-timings", "/status/durations/checkpoint"), "") << m.dump(2);
}

// Holding the Migration with the finalizer is what makes a frozen source
// safe from a deleted Migration: while it cannot be set, nothing may be
// frozen or taken out of its Services.
TEST_F(AgentControllerTest, FinalizerPatchFailsFreezesNothingUntilItLands) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-finalizer", /*gate=*/true));
  ASSERT_EQ(ask(source_.netns->name(), "INCR"), "count 1");
  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(wait_until([&] { return serving() == "True"; }, kDeadline));
  // No answer to the patch (a write the client must not resend): each
  // reconcile sees it fail once.
  const int fault =
      faults_->add({.match = {"PATCH", "/migrations/m-finalizer", true}, .transport_error = true});
  const std::string uid = create_migration("m-finalizer");

  ASSERT_TRUE(wait_until([&] { return faults_->failures(fault) >= 3; }, kDeadline))
      << "failed finalizer patches: " << faults_->failures(fault);
  EXPECT_EQ(freezer(), "thawed");
  EXPECT_EQ(source_.container->state_status(), "running");
  EXPECT_EQ(ask(source_.netns->name(), "COUNT"), "count 1") << "it keeps answering";
  EXPECT_EQ(checkpoints_.load(), 0);
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_FALSE(has_record(uid));
  EXPECT_FALSE(held("m-finalizer"));
  EXPECT_EQ(serving(), "True") << "still in its Services";
  EXPECT_EQ(phase("m-finalizer"), "Checkpointing");

  faults_->heal(fault);
  ASSERT_TRUE(reaches("m-finalizer", "Restoring"));
  EXPECT_TRUE(held("m-finalizer"));
  EXPECT_EQ(checkpoints_.load(), 1);
  EXPECT_TRUE(fs::exists(manifest(uid)));
  EXPECT_EQ(freezer(), "frozen");
  EXPECT_EQ(serving(), "False");
}

// An agent that died mid-checkpoint cannot trust its snapshot: the new one
// reports the failure, and once the operator rolled back, the source runs
// and serves again with its state, and nothing of the Migration is left.
TEST_F(AgentControllerTest, AgentRestartedMidCheckpointRollsBack) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-restart", /*gate=*/true));
  ASSERT_EQ(ask(source_.netns->name(), "INCR"), "count 1");
  const std::string sum = ask(source_.netns->name(), "SUM");
  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(wait_until([&] { return serving() == "True"; }, kDeadline));
  // The first agent dumps and publishes, and cannot say so.
  const int fault = faults_->add({.match = {"PATCH", "/migrations/m-restart/status", true}});
  const std::string uid = create_migration("m-restart");
  ASSERT_TRUE(
      wait_until([&] { return checkpoints_ == 1 && faults_->failures(fault) > 0; }, kDeadline));
  stop_agent();
  // It died just before recording the end of its dump: its record still
  // says Checkpointing (written through records.h, as the agent writes it).
  {
    agent::RecordStore records(records_dir());
    auto all = records.load_all();
    ASSERT_TRUE(all.ok()) << all.status().to_string();
    ASSERT_EQ(all->size(), 1u);
    agent::Record record = all->front();
    ASSERT_EQ(record.migration_uid, uid);
    ASSERT_EQ(record.state, agent::Record::State::kFrozen);
    record.state = agent::Record::State::kCheckpointing;
    ASSERT_TRUE(records.save(record).ok());
  }
  faults_->heal(fault);
  ASSERT_EQ(freezer(), "frozen");
  // Its dump ran outside the agent's cgroup and may outlive it: here a
  // process stays in the container's checkpoint cgroup. The new agent
  // waits for it to end before it reports anything (a thaw would race it).
  auto dumps = checkpoint::CheckpointCgroups::discover(kCheckpointCgroup);
  ASSERT_TRUE(dumps.ok()) << dumps.status().to_string();
  auto procs = dumps->prepare(source_.container->id());
  ASSERT_TRUE(procs.ok()) << procs.status().to_string();
  auto earlier_dump =
      process::Subprocess::spawn({.argv = {"sleep", "600"}, .cgroup_procs = *procs});
  ASSERT_TRUE(earlier_dump.ok()) << earlier_dump.status().to_string();

  ASSERT_NO_FATAL_FAILURE(start_agent());
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(field("m-restart", "/status/failure/reason"), "") << "it waits for the dump";
  EXPECT_EQ(freezer(), "frozen");
  earlier_dump->stop();
  ASSERT_TRUE(
      wait_until([&] { return !field("m-restart", "/status/failure/reason").empty(); }, kDeadline))
      << migration("m-restart").dump(2);
  EXPECT_EQ(field("m-restart", "/status/failure/reason"), "AgentRestarted");
  EXPECT_EQ(phase("m-restart"), "Checkpointing") << "not handed to the target";
  EXPECT_EQ(checkpoints_.load(), 1) << "the new agent does not dump again";
  EXPECT_EQ(freezer(), "frozen") << "thawed only once the operator rolled back";
  EXPECT_EQ(serving(), "False");
  EXPECT_TRUE(wait_until(
      [&] {
        auto events = client_->list(kube::resources::kEvents, kNs,
                                    {.field_selector = "regarding.name=m-restart"});
        return events.ok() && !(*events)["items"].empty() &&
               (*events)["items"][0].value("reason", "") == "AgentRestarted";
      },
      kDeadline))
      << "a Warning event says why";

  ASSERT_NO_FATAL_FAILURE(operator_moves("m-restart", "RolledBack"));
  ASSERT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
  EXPECT_EQ(freezer(), "thawed");
  EXPECT_EQ(source_.container->state_status(), "running");
  EXPECT_EQ(ask(source_.netns->name(), "SUM"), sum) << "it answers again, with its state";
  EXPECT_EQ(ask(source_.netns->name(), "COUNT"), "count 1");
  EXPECT_EQ(serving(), "True");
  EXPECT_EQ(serving_reason(), "RolledBack");
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_FALSE(fs::exists(dir_ + "/snapshots/" + uid + ".abandoned"))
      << "ferry-runc's rollback marker goes once the Migration is final";
  EXPECT_TRUE(wait_until([&] { return !held("m-restart"); }, kDeadline)) << "finalizer removed";
}

// A Migration that succeeded: the restored copy runs elsewhere, so the
// frozen source dies frozen (it never answers again), and the agent drops
// the snapshot, the finalizer and its record.
TEST_F(AgentControllerTest, SucceededKillsTheFrozenSourceAndCleansUp) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-succeeded", /*gate=*/true));
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-succeeded");
  ASSERT_TRUE(reaches("m-succeeded", "Restoring"));
  ASSERT_EQ(freezer(), "frozen");
  ASSERT_TRUE(fs::exists(manifest(uid)));
  const int init = source_.container->state_pid();
  const std::string cgroup = cgroup_dir_of(init);
  const std::vector<int> pids = cgroup_pids(cgroup);
  ASSERT_GE(pids.size(), 2u) << "the statekeeper and its child, in " << cgroup;

  ASSERT_NO_FATAL_FAILURE(operator_moves("m-succeeded", "Switching"));
  ASSERT_NO_FATAL_FAILURE(operator_moves("m-succeeded", "Succeeded"));
  ASSERT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
  EXPECT_EQ(source_.container->state_status(), "stopped");
  for (int pid : pids) EXPECT_TRUE(process_gone(pid)) << "pid " << pid << " of the source runs";
  EXPECT_TRUE(cgroup_pids(cgroup).empty()) << cgroup;
  EXPECT_NE(ask(source_.netns->name(), "PID"), "pid 1") << "the source answers";
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_TRUE(wait_until([&] { return !held("m-succeeded"); }, kDeadline)) << "finalizer removed";
}

// A bare pod's switch: the operator deletes the source during Switching,
// the agent kills it frozen at once, and Succeeded then only cleans up.
TEST_F(AgentControllerTest, SourceDeletedWhileSwitchingDiesFrozenThenSucceededCleansUp) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-switch", /*gate=*/true));
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-switch");
  ASSERT_TRUE(reaches("m-switch", "Restoring"));
  const int init = source_.container->state_pid();
  ASSERT_NO_FATAL_FAILURE(operator_moves("m-switch", "Switching"));
  // With a nodeName and no kubelet to confirm, the pod stays, terminating.
  ASSERT_TRUE(client_->remove(kube::resources::kPods, kNs, source_.name).ok());
  ASSERT_TRUE(wait_until([&] { return source_.container->state_status() == "stopped"; }, kDeadline))
      << "killed once its pod is being deleted";
  EXPECT_TRUE(process_gone(init));
  EXPECT_TRUE(has_record(uid)) << "cleanup waits for the end";
  EXPECT_TRUE(has_snapshot(uid)) << "the snapshot outlives the source until the end";

  ASSERT_NO_FATAL_FAILURE(operator_moves("m-switch", "Succeeded"));
  EXPECT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_TRUE(wait_until([&] { return !held("m-switch"); }, kDeadline)) << "finalizer removed";
}

// PostCopy through the agent's loop: the source dumps everything but its
// memory, publishes at once and serves the pages from the agent's process.
// Nothing is reported transferred while nobody pulls; a target restored
// through ferry-runc (as containerd's shim would, on another node) runs at
// once, and only once it has every page does the agent set
// PagesTransferred, with the source frozen all along. Then the switch
// kills the source and the end cleans up, page servers included.
TEST_F(AgentControllerTest, PostCopyServesPagesUntilTheRestoredCopyHasThemAllThenSwitches) {
  ASSERT_NO_FATAL_FAILURE(require_postcopy());
  ASSERT_NO_FATAL_FAILURE(start_source("src-postcopy", /*gate=*/true));
  for (int i = 0; i < 3; ++i) ask(source_.netns->name(), "INCR");
  const std::string sum_before = ask(source_.netns->name(), "SUM");
  ASSERT_EQ(sum_before.rfind("sum ", 0), 0u) << sum_before;
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-postcopy", "PostCopy");
  ASSERT_TRUE(reaches("m-postcopy", "Restoring"));
  EXPECT_EQ(freezer(), "frozen");
  EXPECT_EQ(serving(), "False");
  const json options = restore_options(uid);
  ASSERT_TRUE(options.is_object()) << "restore-options.json";
  EXPECT_EQ(options.value("lazyPages", false), true) << options.dump();
  const std::string page_server = options.value("pageServer", "");
  EXPECT_EQ(page_server.rfind("127.0.0.1:", 0), 0u) << page_server;
  // Nobody pulls: nothing to report, and the source stays frozen.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(condition("m-postcopy", api::kPagesTransferredCondition), "");
  EXPECT_EQ(phase("m-postcopy"), "Restoring");
  EXPECT_EQ(freezer(), "frozen");
  const int64_t published =
      migration("m-postcopy").value(json::json_pointer("/status/bytes/transferred"), int64_t{-1});
  EXPECT_GT(published, 0);
  EXPECT_LT(published, int64_t{4} << 20) << "no memory in the published snapshot";

  // The target pod's container, restored through ferry-runc.
  const PodIdentity target{.ns = kNs, .name = source_.name + "-moved", .uid = kTargetPodUid};
  NetNs target_ns("fd-" + tag_);
  OverlayRootfs target_rootfs(dir_ + "/image", dir_ + "/rootfs-dst");
  ASSERT_TRUE(target_rootfs.mounted());
  write_bundle(dir_ + "/bundle-dst", target_rootfs.merged(), target_ns, 16, target, uid);
  ShimContainer dst("dst-" + tag_, dir_ + "/bundle-dst", dir_ + "/runc", FERRY_RUNC_BIN);
  ASSERT_EQ(dst.create_and_start(), 0)
      << read_file(dst.log_path()) << read_file(dir_ + "/state/work/" + dst.id() + "/restore.log");
  EXPECT_EQ(ask(target_ns.name(), "PID"), "pid 1");
  ASSERT_TRUE(
      wait_until([&] { return condition("m-postcopy", api::kPagesTransferredCondition) == "True"; },
                 kDeadline))
      << migration("m-postcopy").dump(2)
      << read_file(dir_ + "/state/work/" + dst.id() + "/lazy-pages.log");
  EXPECT_EQ(ask(target_ns.name(), "SUM"), sum_before);
  EXPECT_EQ(ask(target_ns.name(), "COUNT"), "count 3");
  EXPECT_EQ(ask(target_ns.name(), "CHECK"), "check ok");
  EXPECT_NE(field("m-postcopy", "/status/durations/transfer"), "") << "the transfer's duration";
  // The bytes now count the 16 MiB of memory the page server carried too.
  const json done = migration("m-postcopy");
  EXPECT_GT(done.value(json::json_pointer("/status/bytes/transferred"), int64_t{0}),
            published + (int64_t{16} << 20))
      << done["status"].dump(2);
  EXPECT_EQ(done.value(json::json_pointer("/status/bytes/checkpointed"), int64_t{0}),
            done.value(json::json_pointer("/status/bytes/transferred"), int64_t{0}));
  EXPECT_EQ(transfers_ok_.load(), 1) << "the transfer's metric";
  EXPECT_EQ(transfers_failed_.load(), 0);
  EXPECT_EQ(phase("m-postcopy"), "Restoring") << "the switch is the operator's and the target's";
  EXPECT_EQ(freezer(), "frozen") << "the source never runs beside the restored copy";
  if (criu_features_.lazy_dump_read) {
    EXPECT_NE(read_file(dir_ + "/work/" + source_.container->id() + "/dump.log")
                  .find("Lazy pages are read from the frozen tasks on request"),
              std::string::npos)
        << "the agent asks CRIU to read pages on request where CRIU can";
  }

  // The switch: the source pod deleted, killed frozen; the end cleans up.
  const int init = source_.container->state_pid();
  ASSERT_NO_FATAL_FAILURE(operator_moves("m-postcopy", "Switching"));
  ASSERT_TRUE(client_->remove(kube::resources::kPods, kNs, source_.name).ok());
  ASSERT_TRUE(wait_until([&] { return source_.container->state_status() == "stopped"; }, kDeadline))
      << "killed once its pod is being deleted";
  EXPECT_TRUE(process_gone(init));
  ASSERT_NO_FATAL_FAILURE(operator_moves("m-postcopy", "Succeeded"));
  EXPECT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_TRUE(wait_until([&] { return !held("m-postcopy"); }, kDeadline)) << "finalizer removed";
  EXPECT_FALSE(fs::exists(dir_ + "/work/" + source_.container->id() + "/tls"))
      << "the page server's TLS key outlived its transfer";
  EXPECT_TRUE(fs::exists(dir_ + "/work/" + source_.container->id() + "/dump.log"));
  EXPECT_EQ(ask(target_ns.name(), "COUNT"), "count 3") << "the restored copy runs on";
  ASSERT_TRUE(run_ok({FERRY_RUNC_BIN, "--root", dir_ + "/runc", "kill", dst.id(), "KILL"}));
  EXPECT_TRUE(wait_until([&] { return dst.state_status() == "stopped"; }, 10s));
  ASSERT_TRUE(run_ok({FERRY_RUNC_BIN, "--root", dir_ + "/runc", "delete", dst.id()}));
}

// An agent that cannot serve pages (no --page-server-address) refuses a
// PostCopy Migration before it freezes anything: the pod keeps running.
TEST_F(AgentControllerTest, PostCopyWithoutAPageServerAddressFailsBeforeFreezingAnything) {
  ASSERT_NO_FATAL_FAILURE(start_source("src-pc-noaddr", /*gate=*/true));
  page_server_address_ = "";
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-pc-noaddr", "PostCopy");
  ASSERT_TRUE(fails_with("m-pc-noaddr", "ModeUnsupportedOnNode"));
  EXPECT_NE(field("m-pc-noaddr", "/status/failure/message").find("--page-server-address"),
            std::string::npos);
  EXPECT_EQ(freezer(), "thawed");
  EXPECT_TRUE(answers());
  EXPECT_FALSE(has_record(uid));
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_EQ(checkpoints_.load(), 0);
}

// A CRIU without GnuTLS could not encrypt the pages: refused at once, with
// the reason, before anything is frozen.
TEST_F(AgentControllerTest, PostCopyOnACriuWithoutTlsFailsBeforeFreezingAnything) {
  ASSERT_NO_FATAL_FAILURE(require_postcopy());
  ASSERT_NO_FATAL_FAILURE(start_source("src-pc-notls", /*gate=*/true));
  criu_features_.tls = false;
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-pc-notls", "PostCopy");
  ASSERT_TRUE(fails_with("m-pc-notls", "ModeUnsupportedOnNode"));
  EXPECT_NE(field("m-pc-notls", "/status/failure/message").find("without GnuTLS"),
            std::string::npos)
      << field("m-pc-notls", "/status/failure/message");
  EXPECT_EQ(freezer(), "thawed");
  EXPECT_TRUE(answers());
  EXPECT_FALSE(has_record(uid));
  EXPECT_FALSE(has_snapshot(uid));
  EXPECT_EQ(checkpoints_.load(), 0);
}

// Connects to a page server and sends what no CRIU sends: it ends the
// transfer with an error, as a target that died mid-transfer would.
void break_page_server(const std::string& address_port) {
  const auto colon = address_port.rfind(':');
  const std::string host = address_port.substr(0, colon);
  const std::string port = address_port.substr(colon + 1);
  auto r = process::run(
      {"bash", "-c",
       "exec 3<>/dev/tcp/" + host + "/" + port +
           " && head -c 64 /dev/zero | tr '\\0' '\\377' >&3 && sleep 0.2 && exec 3>&-"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
}

// A PostCopy transfer that fails (the target's side broke off) is reported
// as the Migration's failure with CRIU's log; the rollback then stops the
// page server and thaws the source, which serves again with its state.
TEST_F(AgentControllerTest, PostCopyTransferFailureIsReportedAndTheRollbackThawsTheSource) {
  ASSERT_NO_FATAL_FAILURE(require_postcopy());
  ASSERT_NO_FATAL_FAILURE(start_source("src-pc-broken", /*gate=*/true));
  ask(source_.netns->name(), "INCR");
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-pc-broken", "PostCopy");
  ASSERT_TRUE(reaches("m-pc-broken", "Restoring"));
  ASSERT_NO_FATAL_FAILURE(break_page_server(restore_options(uid).value("pageServer", "")));
  ASSERT_TRUE(fails_with("m-pc-broken", "PageTransferFailed"));
  EXPECT_NE(field("m-pc-broken", "/status/failure/message").find("page transfer failed"),
            std::string::npos)
      << field("m-pc-broken", "/status/failure/message");
  // CRIU's own words: it refused the bytes as a TLS handshake.
  EXPECT_NE(field("m-pc-broken", "/status/failure/criuLogExcerpt").find("TLS"), std::string::npos)
      << field("m-pc-broken", "/status/failure/criuLogExcerpt");
  EXPECT_EQ(condition("m-pc-broken", api::kPagesTransferredCondition), "");
  EXPECT_EQ(transfers_failed_.load(), 1) << "the transfer's metric";
  EXPECT_EQ(transfers_ok_.load(), 0);
  EXPECT_EQ(freezer(), "frozen") << "nothing thaws before the operator rolls back";

  ASSERT_NO_FATAL_FAILURE(operator_moves("m-pc-broken", "RolledBack"));
  ASSERT_TRUE(wait_until([&] { return answers(); }, kDeadline)) << "thawed";
  EXPECT_EQ(ask(source_.netns->name(), "COUNT"), "count 1");
  EXPECT_EQ(ask(source_.netns->name(), "CHECK"), "check ok");
  EXPECT_TRUE(wait_until([&] { return serving() == "True"; }, kDeadline));
  EXPECT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
  EXPECT_FALSE(has_snapshot(uid));
}

// The page servers live in the agent's process: an agent restarted during
// the transfer has lost them, so it reports the loss (the operator rolls
// back) instead of waiting forever, and thaws the intact source.
TEST_F(AgentControllerTest, PostCopyAgentRestartedMidTransferReportsTheLossAndRollsBack) {
  ASSERT_NO_FATAL_FAILURE(require_postcopy());
  ASSERT_NO_FATAL_FAILURE(start_source("src-pc-restart", /*gate=*/true));
  ask(source_.netns->name(), "INCR");
  ASSERT_NO_FATAL_FAILURE(start_agent());
  const std::string uid = create_migration("m-pc-restart", "PostCopy");
  ASSERT_TRUE(reaches("m-pc-restart", "Restoring"));
  stop_agent();
  EXPECT_EQ(freezer(), "frozen") << "a stopped page server leaves the source frozen";
  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(fails_with("m-pc-restart", "PageTransferLost"));
  EXPECT_EQ(freezer(), "frozen");
  ASSERT_NO_FATAL_FAILURE(operator_moves("m-pc-restart", "RolledBack"));
  ASSERT_TRUE(wait_until([&] { return answers(); }, kDeadline)) << "thawed";
  EXPECT_EQ(ask(source_.netns->name(), "COUNT"), "count 1");
  EXPECT_TRUE(wait_until([&] { return !has_record(uid); }, kDeadline)) << "record removed";
}

}  // namespace
}  // namespace ferry::testing
