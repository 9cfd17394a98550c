#!/usr/bin/env bash
# What must not happen, on the real cluster with Ferry installed:
#   - bad input: each impossible Migration ends Failed with a clear
#     condition and touches nothing (the pod keeps running, same
#     resourceVersion of its spec, no replacement pod); a malformed
#     Migration is rejected by the API server with the schema's message;
#   - cancel mid-flight: with the target node hung (paused) after the
#     snapshot was published, spec.cancel=true rolls back: the replacement
#     goes away first, then the source thaws and serves again with its state.
source "$(dirname "$0")/lib.sh"
use_namespace

pod() { # pod NAME NODE RUNTIME_CLASS HOSTNETWORK NODESELECTOR_HOST PORT
  local rc="" sel=""
  [[ -n "$3" ]] && rc="runtimeClassName: $3"
  [[ -n "$5" ]] && sel="nodeSelector: {kubernetes.io/hostname: $5}"
  k apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {app: $1}}
spec:
  nodeName: $2
  $rc
  hostNetwork: $4
  $sel
  terminationGracePeriodSeconds: 2
  readinessGates: [{conditionType: ferry.dev/serving}]
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "32", "--port", "$6"]
EOF2
}
migrate() { # migrate NAME POD [TARGET] [MODE]
  local target="" mode=""
  [[ -n "${3:-}" ]] && target="targetNode: $3"
  [[ -n "${4:-}" ]] && mode="mode: $4"
  k apply -f - >/dev/null <<EOF2
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: $1}
spec:
  podName: $2
  $target
  $mode
EOF2
}
phase() { k get migration "$1" -o jsonpath='{.status.phase}'; }

check "pods for the refusals"
pod plain ferry-worker-1 "" false "" 7777
pod hostnet ferry-worker-1 ferry true "" 7781
pod pinned ferry-worker-1 ferry false ferry-worker-1 7777
pod movable ferry-worker-1 ferry false "" 7777
for p in plain hostnet pinned movable; do wait_until 120 "$p running" bash -c "[[ \$(kubectl -n $E2E_NS get pod $p -o jsonpath='{.status.phase}') == Running ]]"; done
kubectl cordon ferry-worker-3 >/dev/null
on_exit "kubectl uncordon ferry-worker-3"

refused() { # refused MIGRATION POD TARGET REASON WORDS [MODE]
  local before after
  before="$(k get pod "$2" -o jsonpath='{.metadata.uid}/{.spec.nodeName}' 2>/dev/null || true)"
  migrate "$1" "$2" "$3" "${6:-}"
  wait_until 30 "$1 Failed" bash -c "[[ \$(kubectl -n $E2E_NS get migration $1 -o jsonpath='{.status.phase}') == Failed ]]"
  local cond
  cond="$(k get migration "$1" -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}: {.status.conditions[?(@.type=="Failed")].message}')"
  [[ "$cond" == "$4: "*"$5"* ]] || fail "$1: condition is '$cond', wanted $4 with '$5'"
  after="$(k get pod "$2" -o jsonpath='{.metadata.uid}/{.spec.nodeName}' 2>/dev/null || true)"
  [[ "$before" == "$after" ]] || fail "$1 touched pod $2"
  ok "$1: $cond"
}
check "each impossible Migration fails with a clear condition and touches nothing"
refused bad-ghost ghost "" PodNotFound "not found"
refused bad-plain plain "" NotOnFerryRuntime "runtimeClassName: ferry"
refused bad-hostnet hostnet "" HostNetworkUnsupported "host network"
refused bad-same movable ferry-worker-1 TargetIsSource "already runs on"
refused bad-unknown movable ferry-worker-9 TargetNodeNotFound "does not exist"
refused bad-cordoned movable ferry-worker-3 TargetNodeIneligible "cordoned"
refused bad-pinned pinned "" NoEligibleNode "nodeSelector"
if jq -e '.memDirtyTrack == false' <<<"$(kubectl get node ferry-worker-1 -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')" >/dev/null; then
  refused bad-precopy movable "" ModeUnsupported "mem_dirty_track" PreCopy
else
  echo "skip: PreCopy refusal: this kernel has soft-dirty tracking (the refusal cannot be provoked)"
fi
if jq -e '.lazyPages == false' <<<"$(kubectl get node ferry-worker-1 -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')" >/dev/null; then
  refused bad-postcopy movable "" ModeUnsupported "userfaultfd" PostCopy
else
  echo "skip: PostCopy refusal of a bare pod: this kernel has userfaultfd (PostCopy of an owned pod is refused in migrate_owned_pods)"
fi
n="$(k get pods -o name | wc -l)"
[[ "$n" == 4 ]] || fail "$n pods: a refusal created something"
ok "no replacement pod was created"

check "a malformed Migration is rejected by the API server with the schema's message"
out="$(k apply -f - 2>&1 <<EOF2 || true
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: bad-mode}
spec: {podName: movable, mode: Warm}
EOF2
)"
[[ "$out" == *'spec.mode: Unsupported value: "Warm"'* ]] || fail "mode Warm: $out"
out="$(k apply -f - 2>&1 <<EOF2 || true
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: bad-nopod}
spec: {targetNode: ferry-worker-2}
EOF2
)"
[[ "$out" == *"spec.podName: Required value"* ]] || fail "no podName: $out"
! k get migration bad-mode bad-nopod >/dev/null 2>&1 || fail "a malformed Migration was stored"
ok "rejected: $(head -c 160 <<<"$out")"

check "cancel mid-flight rolls back: the source thaws, keeps its state and serves again"
kubectl uncordon ferry-worker-3 >/dev/null
wait_until 60 "movable Ready" pod_ready movable
ask() { k exec movable -- sh -c "echo $1 | nc -w 3 127.0.0.1 7777"; }
for _ in 1 2 3; do ask INCR >/dev/null; done
sum="$(ask SUM)"
on_exit "$CLUSTER_DIR/fault.sh unpause ferry-worker-3"
migrate cancel-me movable ferry-worker-3
wait_until 30 "Checkpointing" bash -c "[[ \$(kubectl -n $E2E_NS get migration cancel-me -o jsonpath='{.status.phase}') == Checkpointing ]]"
"$CLUSTER_DIR/fault.sh" pause ferry-worker-3
ok "target node ferry-worker-3 hung"
wait_until 60 "the snapshot is published (Restoring); the target cannot restore" bash -c "[[ \$(kubectl -n $E2E_NS get migration cancel-me -o jsonpath='{.status.phase}') == Restoring ]]"
state="$(docker exec ferry-worker-1 /usr/local/sbin/runc --root /run/containerd/runc/k8s.io state "$(k get pod movable -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|.*://||')" | jq -r .status)"
[[ "$state" == paused ]] || fail "the source is $state while the snapshot waits"
ok "the source is frozen"
k patch migration cancel-me --type=merge -p '{"spec":{"cancel":true}}' >/dev/null
sleep 3
[[ "$(phase cancel-me)" == Restoring ]] || fail "rolled back while the replacement could still run: $(phase cancel-me)"
ok "still waiting for the replacement to go away: $(k get migration cancel-me -o jsonpath='{.status.conditions[?(@.type=="RollingBack")].message}')"
"$CLUSTER_DIR/fault.sh" unpause ferry-worker-3
wait_until 120 "RolledBack" bash -c "[[ \$(kubectl -n $E2E_NS get migration cancel-me -o jsonpath='{.status.phase}') == RolledBack ]]"
reason="$(k get migration cancel-me -o jsonpath='{.status.failure.reason}')"
[[ "$reason" == Cancelled ]] || fail "reason $reason"
wait_until 30 "the source answers again" ask COUNT
[[ "$(ask COUNT)" == "count 3" ]] || fail "counter after the rollback"
[[ "$(ask SUM)" == "$sum" ]] || fail "checksum after the rollback"
wait_until 30 "the source is Ready again (ferry.dev/serving True)" pod_ready movable
replacement="$(k get migration cancel-me -o jsonpath='{.status.targetPod}')"
! k get pod "$replacement" >/dev/null 2>&1 || fail "replacement $replacement still exists"
[[ ! -d "$FERRY_SHARED_DIR/snapshots/$(k get migration cancel-me -o jsonpath='{.metadata.uid}')" ]] || fail "the snapshot was left on shared storage"
ok "rolled back: $(ask COUNT), snapshot removed, Migration finalizer gone: $(k get migration cancel-me -o jsonpath='{.metadata.finalizers}')"
