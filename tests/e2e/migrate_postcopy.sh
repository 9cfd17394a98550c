#!/usr/bin/env bash
# PostCopy through the operator (DESIGN.md §4, spec.mode: PostCopy): a bare
# pod holding 256 MiB of in-memory state is frozen and dumped without its
# memory; the replacement restores at once on the target node, and its
# `criu lazy-pages` pulls the pages from the source agent's CRIU page server
# (on the agent's pod IP, across nodes) while it runs. Checked:
#   - the Migration succeeds, with PagesTransferred True before the switch
#     (Switching is entered only once every page arrived);
#   - the state checksum, counter and other state are intact on the target,
#     and kubectl logs runs on without a restart;
#   - the source's CRIU read the pages from the frozen tasks on request
#     (our CRIU patch) where the node's CRIU has it (its dump.log says so);
#   - at every sampled 100 ms window at most one copy runs.
source "$(dirname "$0")/lib.sh"
use_namespace
src_node=ferry-worker-1 dst_node=ferry-worker-3
mib="${E2E_MIGRATE_MIB:-256}"

check "a stateful bare pod ($mib MiB) on $src_node"
ferry_pod_yaml pc "$src_node" "$mib" | k apply -f - >/dev/null
wait_until 120 "pc Ready" pod_ready pc
for _ in 1 2 3 4; do ask_pod pc INCR >/dev/null; done
sum_before="$(ask_pod pc SUM)"
read -r _ now _ expected <<<"$sum_before"
[[ "$now" == "$expected" ]] || fail "checksum differs before the migration: $sum_before"
src_id="$(k get pod pc -o jsonpath='{.status.containerStatuses[0].containerID}')"
src_id="${src_id#containerd://}"
ok "count 4, $sum_before (container ${src_id:0:12})"

check "kubectl apply a PostCopy Migration; kubectl wait for Succeeded"
start_copy_sampler app "$src_node" "$dst_node"
sleep 1
t0=$(date +%s%N)
k apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-pc}
spec: {podName: pc, targetNode: $dst_node, mode: PostCopy}
EOF
final() { [[ "$(k get migration move-pc -o jsonpath='{.status.phase}')" =~ ^(Succeeded|Failed|RolledBack)$ ]]; }
wait_until 300 "the Migration reached a final phase" final
m="$(k get migration move-pc -o json)"
if [[ "$(jq -r .status.phase <<<"$m")" != Succeeded ]]; then
  jq .status <<<"$m"
  kubectl -n ferry-system logs ds/ferry-agent --tail=30 --all-containers --prefix 2>&1 | tail -60
  fail "the PostCopy Migration did not succeed"
fi
t1=$(date +%s%N)
ok "Succeeded $(((t1 - t0) / 1000000)) ms after kubectl apply; durations $(jq -c .status.durations <<<"$m")"

check "the pages were all transferred before the switch"
[[ "$(jq -r .status.effective.mode <<<"$m")" == PostCopy ]] || fail "effective mode: $(jq -c .status.effective <<<"$m")"
cond="$(jq -c '.status.conditions[] | select(.type == "PagesTransferred")' <<<"$m")"
[[ "$(jq -r .status <<<"$cond")" == True ]] || fail "PagesTransferred: $cond"
transferred_at="$(jq -r .lastTransitionTime <<<"$cond")"
switching_at="$(jq -r '.status.phaseTransitionTimestamps[] | select(.phase == "Switching") | .time' <<<"$m")"
[[ -n "$switching_at" && ! "$switching_at" < "$transferred_at" ]] ||
  fail "Switching ($switching_at) before PagesTransferred ($transferred_at)"
ok "$(jq -r .message <<<"$cond"); Switching at $switching_at"
# status.bytes counts the memory the page server carried, not only the
# published snapshot (CRIU's stats-dump of the lazy dump: pages_lazy).
bytes="$(jq -r '.status.bytes.transferred // 0' <<<"$m")"
((bytes >= mib * 1024 * 1024)) || fail "bytes.transferred $bytes: the $mib MiB served are not counted"
ok "bytes.transferred $((bytes >> 20)) MiB"

check "the restored pod runs on $dst_node with all its state"
target="$(jq -r .status.targetPod <<<"$m")"
wait_until 60 "$target Ready" pod_ready "$target"
sleep 1
stop_copy_sampler
[[ "$(k get pod "$target" -o jsonpath='{.spec.nodeName}')" == "$dst_node" ]] || fail "target not on $dst_node"
wait_until 60 "the source pod is gone" bash -c "! kubectl -n $E2E_NS get pod pc >/dev/null 2>&1"
[[ "$(ask_pod "$target" SUM)" == "$sum_before" ]] || fail "checksum after: $(ask_pod "$target" SUM), before: $sum_before"
[[ "$(ask_pod "$target" COUNT)" == "count 4" ]] || fail "counter after: $(ask_pod "$target" COUNT)"
[[ "$(ask_pod "$target" CHECK)" == "check ok" ]] || fail "other state after restore: $(ask_pod "$target" CHECK)"
[[ "$(k logs "$target" | grep -c '^statekeeper: pid')" == 1 ]] || fail "the restored container restarted"
ok "count 4, $sum_before, one start line in kubectl logs"

check "how the source's CRIU served the pages"
report="$(kubectl get node "$src_node" -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')"
dump_log="$(docker exec "$src_node" cat "/var/lib/ferry/work/$src_id/dump.log" 2>/dev/null || true)"
[[ -n "$dump_log" ]] || fail "no dump.log for container $src_id on $src_node"
if jq -e '.lazyDumpRead == true' <<<"$report" >/dev/null; then
  grep -q 'Lazy pages are read from the frozen tasks on request' <<<"$dump_log" ||
    fail "the agent did not ask CRIU to read pages on request: $(tail -5 <<<"$dump_log")"
  ok "read from the frozen tasks on request (lazy-dump-mode read)"
else
  ok "spliced while frozen: this node's CRIU lacks lazy-dump-mode read ($(jq -c .criuVersion <<<"$report"))"
fi
# Memory crosses the nodes' network: only over mutual TLS, with this
# migration's certificates (the agent refuses PostCopy where CRIU cannot).
# The page server logs the handshake, then checks the client's certificate
# (criu/tls.c), as the client checks the server's: the transfer succeeded.
grep -q 'TLS handshake completed' <<<"$dump_log" ||
  fail "the page server did not use TLS: $(grep -i tls <<<"$dump_log" | tail -3)"
ok "pages went over mutual TLS (the page server logged the handshake)"

check "at most one running copy at every sampled moment"
check_one_copy
