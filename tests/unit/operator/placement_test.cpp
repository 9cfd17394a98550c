#include "migration/placement.h"

#include <gtest/gtest.h>

namespace ferry::operator_ {
namespace {

json node(const std::string& name, const std::string& cpu = "2", const std::string& mem = "4Gi",
          bool ready = true) {
  return {{"metadata",
           {{"name", name},
            {"labels", {{"kubernetes.io/hostname", name}}},
            {"annotations",
             {{"ferry.dev/agent",
               R"({"criuVersion":"4.2.1","lazyPages":true,"pageTransferTls":true})"}}}}},
          {"spec", json::object()},
          {"status",
           {{"allocatable", {{"cpu", cpu}, {"memory", mem}}},
            {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
}

json pod(const std::string& name, const std::string& on, const std::string& cpu = "100m",
         const std::string& mem = "256Mi") {
  return {{"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"nodeName", on},
            {"runtimeClassName", "ferry"},
            {"containers",
             {{{"name", "app"}, {"resources", {{"requests", {{"cpu", cpu}, {"memory", mem}}}}}}}}}},
          {"status", {{"phase", "Running"}}}};
}

// choose_target over views of these objects, as the controller passes its caches.
Result<Placement> choose(const json& pod, const std::vector<json>& nodes,
                         const std::vector<json>& pods, const std::string& requested) {
  std::vector<const json*> n, p;
  for (const auto& x : nodes) n.push_back(&x);
  for (const auto& x : pods) p.push_back(&x);
  return choose_target(pod, n, p, requested);
}

TEST(QuantityTest, ParsesKubernetesQuantities) {
  EXPECT_EQ(parse_millicpu("100m"), 100);
  EXPECT_EQ(parse_millicpu("2"), 2000);
  EXPECT_EQ(parse_millicpu("0.5"), 500);
  EXPECT_EQ(parse_bytes("128Mi"), 128LL << 20);
  EXPECT_EQ(parse_bytes("1G"), 1000000000LL);
  EXPECT_EQ(parse_bytes("4Gi"), 4LL << 30);
  EXPECT_EQ(parse_bytes("1024"), 1024);
}

TEST(CheckPodTest, EachRefusalHasItsReason) {
  EXPECT_EQ(check_pod(nullptr, "ns", "x").reason(), kPodNotFound);
  json p = pod("p", "n1");
  EXPECT_TRUE(check_pod(&p, "default", "p").ok());
  json pending = p;
  pending["status"]["phase"] = "Pending";
  EXPECT_EQ(check_pod(&pending, "default", "p").reason(), kPodNotRunning);
  json host = p;
  host["spec"]["hostNetwork"] = true;
  EXPECT_EQ(check_pod(&host, "default", "p").reason(), kHostNetworkUnsupported);
  json runc = p;
  runc["spec"].erase("runtimeClassName");
  Status s = check_pod(&runc, "default", "p");
  EXPECT_EQ(s.reason(), kNotOnFerryRuntime);
  EXPECT_NE(s.message().find("runtimeClassName: ferry"), std::string::npos);
}

TEST(ChooseTargetTest, PicksTheNodeWithMostFreeMemoryAndExplainsEveryNode) {
  std::vector<json> nodes = {node("n1"), node("n2", "2", "8Gi"), node("n3")};
  json p = pod("p", "n1");
  auto r = choose(p, nodes, {p}, "");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->target, "n2");
  auto reasons = r->reasons();
  ASSERT_EQ(reasons.size(), 3u);
  EXPECT_EQ(reasons[0], "n1: the source node");
  EXPECT_EQ(reasons[1].rfind("n2: chosen, eligible", 0), 0u) << reasons[1];
}

TEST(ChooseTargetTest, FiltersCordonedNotReadyTaintedAndFull) {
  json cordoned = node("a-cordoned");
  cordoned["spec"]["unschedulable"] = true;
  json tainted = node("b-tainted");
  tainted["spec"]["taints"] = {{{"key", "dedicated"}, {"value", "db"}, {"effect", "NoSchedule"}}};
  json full = node("c-full", "2", "300Mi");
  json notready = node("d-notready", "2", "4Gi", false);
  json p = pod("p", "src", "100m", "256Mi");
  json other = pod("other", "c-full", "100m", "100Mi");
  auto r = choose(p, {node("src"), cordoned, tainted, full, notready}, {p, other}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), kNoEligibleNode);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("a-cordoned: cordoned"), std::string::npos) << m;
  EXPECT_NE(m.find("b-tainted: taint dedicated:NoSchedule not tolerated"), std::string::npos) << m;
  EXPECT_NE(m.find("c-full: not enough memory: 200Mi free, 256Mi requested"), std::string::npos)
      << m;
  EXPECT_NE(m.find("d-notready: not Ready"), std::string::npos) << m;

  json tolerant = p;
  tolerant["spec"]["tolerations"] = {
      {{"key", "dedicated"}, {"operator", "Equal"}, {"value", "db"}, {"effect", "NoSchedule"}}};
  auto ok = choose(tolerant, {node("src"), cordoned, tainted}, {tolerant}, "");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->target, "b-tainted");
}

TEST(ChooseTargetTest, RespectsNodeSelectorAndRequiredAffinity) {
  json zone_a = node("za");
  zone_a["metadata"]["labels"]["zone"] = "a";
  json zone_b = node("zb", "2", "16Gi");
  zone_b["metadata"]["labels"]["zone"] = "b";
  json p = pod("p", "src");
  p["spec"]["nodeSelector"] = {{"zone", "a"}};
  auto r = choose(p, {node("src"), zone_a, zone_b}, {p}, "");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->target, "za") << "zb has more memory but the selector says zone a";

  json q = pod("q", "src");
  q["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
   ["nodeSelectorTerms"] = {
       {{"matchExpressions", {{{"key", "zone"}, {"operator", "NotIn"}, {"values", {"b"}}}}}}};
  auto r2 = choose(q, {node("src"), zone_a, zone_b}, {q}, "");
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->target, "za");
}

TEST(ChooseTargetTest, RequestedTargetIsHonouredOrRefusedClearly) {
  json p = pod("p", "n1");
  std::vector<json> nodes = {node("n1"), node("n2"), node("n3", "2", "16Gi")};
  auto r = choose(p, nodes, {p}, "n2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->target, "n2");
  EXPECT_EQ(choose(p, nodes, {p}, "n1").status().reason(), kTargetIsSource);
  EXPECT_EQ(choose(p, nodes, {p}, "nope").status().reason(), kTargetNodeNotFound);
  nodes[1]["spec"]["unschedulable"] = true;
  Status cordoned = choose(p, nodes, {p}, "n2").status();
  EXPECT_EQ(cordoned.reason(), kTargetNodeIneligible);
  EXPECT_NE(cordoned.message().find("cordoned"), std::string::npos);
}

TEST(CheckPodTest, OwnedPodsNeedASupportedOwnerAndTheOptInLabel) {
  json p = pod("p", "n1");
  p["metadata"]["ownerReferences"] = {
      {{"kind", "DaemonSet"}, {"name", "logs"}, {"controller", true}}};
  Status st = check_pod(&p, "default", "p");
  EXPECT_EQ(st.reason(), kOwnedPodUnsupported);
  EXPECT_NE(st.message().find("DaemonSet logs"), std::string::npos);

  for (const char* kind : {"ReplicaSet", "StatefulSet"}) {
    p["metadata"]["ownerReferences"] = {
        {{"kind", kind}, {"name", "web-abc"}, {"controller", true}}};
    p["metadata"]["labels"] = json::object();
    st = check_pod(&p, "default", "p");
    EXPECT_EQ(st.reason(), kOwnedPodNotOptedIn) << kind;
    EXPECT_NE(st.message().find("ferry.dev/migratable=true"), std::string::npos);
    p["metadata"]["labels"]["ferry.dev/migratable"] = "true";
    EXPECT_TRUE(check_pod(&p, "default", "p").ok()) << kind;
  }
  // A non-controller owner reference does not make the pod owned.
  p["metadata"]["ownerReferences"] = {{{"kind", "Job"}, {"name", "j"}, {"controller", false}}};
  EXPECT_TRUE(check_pod(&p, "default", "p").ok());
}

TEST(ChooseTargetTest, NodesNeedACompatibleAgentReport) {
  json p = pod("p", "n1");
  std::vector<json> nodes = {node("n1"), node("n2"), node("n3"), node("n4")};
  nodes[1]["metadata"]["annotations"].erase("ferry.dev/agent");
  nodes[2]["metadata"]["annotations"]["ferry.dev/agent"] = R"({"criuVersion":"4.1.1"})";
  nodes[3]["metadata"]["annotations"]["ferry.dev/agent"] = R"({"criuVersion":"4.10"})";
  auto r = choose(p, nodes, {p}, "");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->target, "n4");
  EXPECT_EQ(r->verdicts[1].reason, "no Ferry agent has reported on this node");
  EXPECT_EQ(r->verdicts[2].reason, "CRIU 4.1.1 is older than the source's 4.2.1");
  // PostCopy needs lazy pages on the target too; n4 did not report them.
  EXPECT_EQ(choose_target(p, {&nodes[0], &nodes[3]}, {&p}, "", "PostCopy").status().reason(),
            kNoEligibleNode);
  // A source that dumps with CRIU's nftables network lock needs a target
  // whose CRIU can restore it (CRIU restores with the dump's lock method).
  nodes[0]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.2.1","networkLock":"nftables"})";
  nodes[3]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.10","networkLock":"iptables"})";
  r = choose(p, nodes, {p}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), kNoEligibleNode);
  EXPECT_NE(r.status().message().find(
                "n4: its CRIU cannot restore the nftables network lock the source's dump uses"),
            std::string::npos)
      << r.status().message();
  nodes[3]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.10","networkLock":"nftables"})";
  r = choose(p, nodes, {p}, "");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->target, "n4");
  // A source whose agent writes snapshot format 3 (BLAKE3 digests) needs a
  // target whose ferry-runc reads it; an agent that does not say reads 2.
  nodes[0]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.2.1","networkLock":"nftables","snapshotFormat":3})";
  r = choose(p, nodes, {p}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("n4: its agent reads snapshot format 2, older than the "
                                      "source's 3 (upgrade its ferry-agent)"),
            std::string::npos)
      << r.status().message();
  nodes[3]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.10","networkLock":"nftables","snapshotFormat":3})";
  r = choose(p, nodes, {p}, "");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->target, "n4");
  // No report from the source: nothing can be said about compatibility.
  nodes[0]["metadata"]["annotations"].erase("ferry.dev/agent");
  EXPECT_EQ(choose(p, nodes, {p}, "").status().reason(), kNoEligibleNode);
}

TEST(ChooseTargetTest, PreCopyWithoutSoftDirtyTrackingIsRefusedClearly) {
  json p = pod("p", "n1");
  std::vector<json> nodes = {node("n1"), node("n2")};
  Status st = choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "", "PreCopy").status();
  EXPECT_EQ(st.reason(), kModeUnsupported);
  EXPECT_NE(st.message().find("mem_dirty_track"), std::string::npos);
  EXPECT_EQ(compare_versions("4.2.1", "4.10"), -1);
  EXPECT_EQ(compare_versions("4.2", "4.2.0"), 0);
}

// PostCopy keeps the frozen source until the restored copy has all its
// memory; an owned pod's replacement only comes once the source is deleted.
TEST(ChooseTargetTest, PostCopyTakesBarePodsAndRefusesOwnedOnesClearly) {
  json p = pod("p", "n1");
  std::vector<json> nodes = {node("n1"), node("n2")};
  auto bare = choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "", "PostCopy");
  ASSERT_TRUE(bare.ok()) << bare.status().to_string();
  EXPECT_EQ(bare->target, "n2");
  p["metadata"]["ownerReferences"] = {
      {{"kind", "ReplicaSet"}, {"name", "web-abc"}, {"controller", true}}};
  Status st = choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "", "PostCopy").status();
  EXPECT_EQ(st.reason(), kModeUnsupported);
  EXPECT_NE(st.message().find("owned by ReplicaSet web-abc"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("use Cold"), std::string::npos) << st.message();
  EXPECT_TRUE(choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "", "Cold").ok());
  // The source must have userfaultfd too, not only the target.
  p["metadata"].erase("ownerReferences");
  nodes[0]["metadata"]["annotations"]["ferry.dev/agent"] = R"({"criuVersion":"4.2.1"})";
  st = choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "", "PostCopy").status();
  EXPECT_EQ(st.reason(), kModeUnsupported);
  EXPECT_NE(st.message().find("userfaultfd"), std::string::npos) << st.message();
}

// Pages travel only over TLS: a source or target whose CRIU cannot (no
// GnuTLS, or an agent too old to report it) is no PostCopy node.
TEST(ChooseTargetTest, PostCopyNeedsPageTransferTlsOnBothEnds) {
  json p = pod("p", "n1");
  std::vector<json> nodes = {node("n1"), node("n2"), node("n3")};
  nodes[1]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.2.1","lazyPages":true})";
  auto r = choose_target(p, {&nodes[0], &nodes[1], &nodes[2]}, {&p}, "", "PostCopy");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->target, "n3");
  EXPECT_EQ(r->verdicts[1].reason, "its CRIU cannot fetch PostCopy's pages over TLS (no GnuTLS)");
  EXPECT_TRUE(choose_target(p, {&nodes[0], &nodes[1]}, {&p}, "n2", "Cold").ok())
      << "Cold needs no TLS";
  nodes[0]["metadata"]["annotations"]["ferry.dev/agent"] =
      R"({"criuVersion":"4.2.1","lazyPages":true,"pageTransferTls":false})";
  Status st = choose_target(p, {&nodes[0], &nodes[2]}, {&p}, "", "PostCopy").status();
  EXPECT_EQ(st.reason(), kModeUnsupported);
  EXPECT_NE(st.message().find("only over TLS"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace ferry::operator_
