#!/usr/bin/env bash
# Acceptance: faults on demand (hack/cluster/fault.sh). Killing a node
# container makes its Node NotReady within the configured grace period
# (kube-controller-manager --node-monitor-grace-period); pausing and cutting
# a node off the network do too, and unpausing / reconnecting bring it back
# Ready with working pod routes; `make cluster-up` repairs a killed node.
source "$(dirname "$0")/lib.sh"
use_namespace
mapfile -t nodes < <(node_names)
victim="${nodes[-1]}" peer="${nodes[0]}"
fault="$CLUSTER_DIR/fault.sh"
grace="${FERRY_NODE_GRACE%s}"
# NotReady comes at most grace + monitor period (2s) after the last lease
# renewal (every 5s); allow 10s on top of the grace period.
bound=$((grace + 10))

# Pods that stay bound to their node through the faults (no taint eviction).
tolerant_pod() {
  k apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: Pod
metadata:
  name: $1
spec:
  nodeSelector: {kubernetes.io/hostname: $2}
  terminationGracePeriodSeconds: 1
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}
  containers:
  - name: statekeeper
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    args: ["--port", "7000", "--mem-mib", "8"]
EOF2
}
tolerant_pod target "$victim"
tolerant_pod client "$peer"
wait_until 60 "pods on $victim and $peer Ready" eval 'pod_ready target && pod_ready client'
target_ip="$(k get pod target -o jsonpath='{.status.podIP}')"
reaches_target() { [[ "$(ask_from client "$target_ip" 7000 PID)" == "pid 1" ]]; }
reaches_target || fail "client on $peer cannot reach target on $victim before any fault"

# expect_not_ready WHAT: wait for the victim's Node to leave Ready, bounded.
expect_not_ready() {
  local t0=$SECONDS
  wait_until "$bound" "Node $victim NotReady after $1" node_not_ready "$victim"
  echo "   ($1 -> Ready=$(node_ready_status "$victim") in $((SECONDS - t0))s; grace period ${grace}s)"
}
on_exit "docker unpause $victim"
on_exit "$fault reconnect $victim"

check "pause / unpause $victim"
"$fault" pause "$victim"
[[ "$(container_state "$victim")" == paused ]] || fail "$victim is not paused"
expect_not_ready pause
"$fault" unpause "$victim"
wait_until 60 "Node $victim Ready after unpause" node_is_ready "$victim"
wait_until 30 "client on $peer reaches target on $victim again" reaches_target

check "disconnect / reconnect $victim"
"$fault" disconnect "$victim"
node_connected "$victim" && fail "$victim still attached to $FERRY_NETWORK"
reaches_target && fail "target on a disconnected node still answers"
expect_not_ready disconnect
"$fault" reconnect "$victim"
wait_until 60 "Node $victim Ready after reconnect" node_is_ready "$victim"
wait_until 30 "client on $peer reaches target on $victim again (routes restored)" reaches_target

check "kill $victim: NotReady within the grace period"
"$fault" kill "$victim"
[[ "$(container_state "$victim")" == exited ]] || fail "$victim container is $(container_state "$victim"), not exited"
expect_not_ready kill

check "make cluster-up repairs the killed node"
"$CLUSTER_DIR/up.sh" >/dev/null 2>&1 || fail "cluster-up after the kill failed"
for n in "${nodes[@]}"; do node_is_ready "$n" || fail "$n not Ready after repair"; done
ok "all nodes Ready again; $victim recreated"
