#!/usr/bin/env bash
# The walking skeleton, as a platform team uses it: Ferry installed from
# deploy/ (ferry_install ran first), a bare pod holding 256 MiB of
# in-memory state behind a Service, a `kubectl apply` of a Migration, and
# `kubectl wait` for it. Checked throughout and after:
#   - the state checksum, counter and every other kind of state are intact
#     on the new node, and the process keeps running (its ticks go on);
#   - kubectl logs shows the restored process's output; kubectl exec works;
#   - at every sampled moment at most one copy runs (runc state on the
#     nodes: the frozen source is "paused", never "running" beside a
#     restored copy);
#   - a client calling the Service's ClusterIP every 100 ms throughout
#     reaches the restored copy with its state; its error window is printed
#     (a measurement, not a pass/fail assert: timings belong in bench/);
#   - kubectl get migrations shows phase, pod, source, target, duration.
source "$(dirname "$0")/lib.sh"
use_namespace
src_node=ferry-worker-1 dst_node=ferry-worker-2 client_node=ferry-worker-3
mib="${E2E_MIGRATE_MIB:-256}"

check "a stateful bare pod ($mib MiB) behind a Service on $src_node, a client on $client_node"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: keeper}
spec:
  selector: {app: keeper}
  ports: [{port: 7777, targetPort: 7777}]
---
apiVersion: v1
kind: Pod
metadata:
  name: keeper
  labels: {app: keeper}
spec:
  nodeName: $src_node
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 5
  readinessGates: [{conditionType: ferry.dev/serving}]
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "$mib", "--port", "7777"]
    readinessProbe:
      tcpSocket: {port: 7777}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: $client_node
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sleep", "3600"]
EOF
wait_until 120 "keeper Ready (the agent set ferry.dev/serving)" pod_ready keeper
wait_until 60 "client Running" bash -c "[[ \$(kubectl -n $E2E_NS get pod client -o jsonpath='{.status.phase}') == Running ]]"
svc="$(k get service keeper -o jsonpath='{.spec.clusterIP}')"
ask() { k exec client -- sh -c "echo $1 | nc -w 3 $svc 7777"; }
wait_until 30 "the Service answers" ask COUNT
for _ in 1 2 3 4 5; do ask INCR >/dev/null; done
sum_before="$(ask SUM)"
[[ "$(ask COUNT)" == "count 5" ]] || fail "counter before"
[[ "$sum_before" == "sum "*" expected "* ]] || fail "SUM answer: $sum_before"
read -r _ now _ expected <<<"$sum_before"
[[ "$now" == "$expected" ]] || fail "checksum differs before the migration: $sum_before"
ok "state before: count 5, $sum_before"

check "a client calls the ClusterIP every 100 ms; the nodes are sampled for running copies"
# Client: one line per call, "<seconds (uptime)> <answer or ERR>" (busybox
# date has no sub-second format; only differences matter).
k exec client -- sh -c "rm -f /tmp/calls; while :; do t=\$(cut -d' ' -f1 /proc/uptime); a=\$(echo COUNT | nc -w 1 $svc 7777 2>/dev/null); echo \"\$t \${a:-ERR}\" >>/tmp/calls; sleep 0.1; done" >/dev/null 2>&1 &
client_pid=$!
on_exit "kill $client_pid"
start_copy_sampler app $src_node $dst_node
sleep 2

check "kubectl apply a Migration; kubectl wait for Succeeded"
t0=$(date +%s%N)
k apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-keeper}
spec:
  podName: keeper
  targetNode: $dst_node
EOF
final() { [[ "$(k get migration move-keeper -o jsonpath='{.status.phase}')" =~ ^(Succeeded|Failed|RolledBack)$ ]]; }
wait_until 300 "the Migration reached a final phase" final
if ! k wait --for=jsonpath='{.status.phase}'=Succeeded migration/move-keeper --timeout=1s >/dev/null; then
  k get migration move-keeper -o yaml
  kubectl -n ferry-system logs ds/ferry-agent --tail=30 --all-containers --prefix 2>&1 | tail -60
  fail "the Migration did not succeed"
fi
t1=$(date +%s%N)
ok "Succeeded $(((t1 - t0) / 1000000)) ms after kubectl apply"
target="$(k get migration move-keeper -o jsonpath='{.status.targetPod}')"
wait_until 60 "$target Ready (ferry.dev/serving True once restored)" pod_ready "$target"
sleep 2
kill "$client_pid" 2>/dev/null || true
stop_copy_sampler

check "the restored pod runs on $dst_node with all its state"
[[ "$(k get pod "$target" -o jsonpath='{.spec.nodeName}')" == "$dst_node" ]] || fail "target not on $dst_node"
gone() { ! k get pod keeper >/dev/null 2>&1; }
wait_until 60 "the source pod is gone" gone
sum_after="$(ask SUM)"
[[ "$sum_after" == "$sum_before" ]] || fail "checksum after: $sum_after, before: $sum_before"
[[ "$(ask COUNT)" == "count 5" ]] || fail "counter after the migration"
check_state="$(ask CHECK)"
[[ "$check_state" == "check ok" ]] || fail "other state after restore: $check_state"
ok "checksum, counter, files, pipes, sockets, threads, timer and child process intact: $sum_after"

check "kubectl exec and kubectl logs work on the restored container"
[[ "$(k exec "$target" -- sh -c 'echo COUNT | nc -w 3 127.0.0.1 7777')" == "count 5" ]] || fail "kubectl exec"
wait_until 15 "the restored process keeps logging ticks" bash -c "(( \$(kubectl -n $E2E_NS logs $target | grep -c '^tick ') > $(k logs "$target" | grep -c '^tick ') ))"
logs="$(k logs "$target")"
# The source's log is carried: one start line, then ticks 1, 2, 3, ...
# from before the move through after it, never restarting.
starts="$(grep -c '^statekeeper: pid' <<<"$logs" || true)"
[[ "$starts" == 1 ]] || fail "$starts start lines in kubectl logs (restarted, or the log was not carried)"
awk '/^tick / { if ($2 != prev + 1) { print "tick " $2 " after " prev; exit 1 } prev = $2 }' <<<"$logs" ||
  fail "the ticks in kubectl logs do not run on: $(grep '^tick ' <<<"$logs" | tr '\n' ' ')"
ok "kubectl logs: the start line and $(grep -c '^tick ' <<<"$logs") ticks in one unbroken sequence across the move"

check "at most one running copy at every sampled moment"
check_one_copy

check "the client reached the restored copy; its error window"
k exec client -- true 2>/dev/null
calls="$(k exec client -- cat /tmp/calls)"
# The error window: from the last answer before the first failed call to
# the first answer after the last failed call.
read -r errors window <<<"$(awk '
  $2 == "ERR" { if (!first_err) { first_err = 1; before = last_ok } last_err = $1; n++ }
  $2 == "count" { last_ok = $1; if (n && $1 > last_err && !after) after = $1 }
  END { if (!n) print 0, 0; else printf "%d %d\n", n, (after - before) * 1000 }' <<<"$calls")"
[[ "$(tail -1 <<<"$calls")" == *"count 5" ]] || fail "last client call: $(tail -1 <<<"$calls")"
m="$(k get migration move-keeper -o json)"
freeze="$(jq -r .status.durations.freeze <<<"$m")"
echo "client calls around the switch (uptime seconds, answer):"
first="$(grep -n ' ERR$' <<<"$calls" | head -1 | cut -d: -f1)" last="$(grep -n ' ERR$' <<<"$calls" | tail -1 | cut -d: -f1)"
[[ -z "$first" ]] || sed -n "$((first > 2 ? first - 2 : 1)),$((last + 2))p" <<<"$calls" | sed 's/^/  /'
echo "client error window: ${window} ms over $errors failed calls (last answer from the source -> first from the restored copy); durations $(jq -c .status.durations <<<"$m")"
# The issue's target: under the time the source is frozen (checkpoint,
# transfer and restore: until the restored copy runs) + 1 s. Reported, not
# asserted (timings belong in bench/).
frozen_ms="$(jq -r '[.status.durations.checkpoint, .status.durations.transfer, .status.durations.restore] | map(rtrimstr("s") | tonumber) | add * 1000 | floor' <<<"$m")"
verdict="within"
((window < frozen_ms + 1000)) || verdict="over"
echo "error window ${window} ms vs target ${frozen_ms} ms frozen + 1000 ms: $verdict target (client resolution: one call per 0.1 s, failed calls take up to 1.1 s)"
ok "$(wc -l <<<"$calls") client calls, the last ones answered by the restored copy"

check "kubectl get migrations shows phase, pod, source, target and duration"
row="$(k get migrations move-keeper --no-headers)"
echo "$row"
[[ "$row" =~ ^move-keeper[[:space:]]+Succeeded[[:space:]]+keeper[[:space:]]+$src_node[[:space:]]+$dst_node[[:space:]]+[0-9.]+s ]] || fail "columns: $row"
ok "printer columns"
