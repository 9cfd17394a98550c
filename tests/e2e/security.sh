#!/usr/bin/env bash
# The restore path cannot be abused by a tenant (issue #7), on the real
# cluster with Ferry installed:
#   - the guard webhook rejects a pod created with ferry.dev/restore-from by
#     anyone but Ferry's operator, and any later change of that annotation;
#   - snapshot files on shared storage are root-only (0600 files, 0700
#     directories, owned by root);
#   - with the guard removed (as if the webhook were down: its failure
#     policy is Ignore), a pod forced onto a node with another Migration's
#     restore annotation is still refused by ferry-runc, because the
#     snapshot is bound to another pod; its container never runs.
source "$(dirname "$0")/lib.sh"
use_namespace
src=ferry-worker-1 thief_node=ferry-worker-2 dst=ferry-worker-3
# The node hung below must not host the operator leader (it would hold the
# Lease until it expired, and nothing would move meanwhile).
leader_node="$(kubectl -n ferry-system get pod "$(kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}')" -o jsonpath='{.spec.nodeName}')"
[[ "$leader_node" == "$dst" ]] && { dst=ferry-worker-2 thief_node=ferry-worker-3; }

check "the guard rejects a user-set restore annotation"
out="$(k apply -f - 2>&1 <<EOF || true
apiVersion: v1
kind: Pod
metadata:
  name: sneaky
  annotations: {ferry.dev/restore-from: "0b3c2f8e-0000-0000-0000-000000000000"}
spec:
  runtimeClassName: ferry
  containers: [{name: app, image: $WORKLOAD_IMAGE, imagePullPolicy: Never, command: [/bin/sleep, "600"]}]
EOF
)"
[[ "$out" == *"only Ferry may create a pod with the ferry.dev/restore-from annotation"* ]] ||
  fail "pod with a restore annotation not rejected by the guard: $out"
! k get pod sneaky >/dev/null 2>&1 || fail "the pod was created"
ok "rejected: $(grep -o 'admission webhook.*' <<<"$out" | head -c 200)"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: app, image: $WORKLOAD_IMAGE, imagePullPolicy: Never, command: [/bin/sleep, "600"]}]
EOF
out="$(k annotate pod plain ferry.dev/restore-from=0b3c2f8e-0000-0000-0000-000000000000 2>&1 || true)"
[[ "$out" == *"cannot be added, changed or removed"* ]] || fail "annotating an existing pod was not rejected: $out"
ok "adding it to an existing pod is rejected too"

check "a published snapshot (the target node hung) is root-only on shared storage"
ferry_pod_yaml victim "$src" 32 | k apply -f - >/dev/null
wait_until 60 "victim Ready" pod_ready victim
on_exit "$CLUSTER_DIR/fault.sh unpause $dst"
# The target hung first (still Ready for the node grace period): the
# snapshot is published and stays, since nothing can restore it.
"$CLUSTER_DIR/fault.sh" pause "$dst"
k apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-victim}
spec: {podName: victim, targetNode: $dst}
EOF
phase() { k get migration move-victim -o jsonpath='{.status.phase}'; }
wait_until 60 "the snapshot is published (Restoring)" bash -c "[[ \$(kubectl -n $E2E_NS get migration move-victim -o jsonpath='{.status.phase}') == Restoring ]]"
uid="$(k get migration move-victim -o jsonpath='{.metadata.uid}')"
snap="$FERRY_SHARED_DIR/snapshots/$uid"
[[ -d "$snap" ]] || fail "no snapshot at $snap"
open="$(find "$snap" \( -perm /077 -o ! -user root \) -printf '%m %u %p\n')"
[[ -z "$open" ]] || fail "snapshot entries readable beyond root: $open"
ok "$(find "$snap" -type f | wc -l) files and $(find "$snap" -type d | wc -l) directories, all root-only (e.g. $(stat -c '%a %U' "$snap") $snap)"

check "with the guard removed, a forced restore annotation is refused by ferry-runc (binding)"
saved="$(kubectl get mutatingwebhookconfiguration ferry-webhook -o json | jq 'del(.metadata.resourceVersion, .metadata.managedFields)')"
on_exit "kubectl replace -f - <<<'$saved'"
guard_index="$(jq '[.webhooks[].name] | index("guard.pods.ferry.dev")' <<<"$saved")"
kubectl patch mutatingwebhookconfiguration ferry-webhook --type=json \
  -p "[{\"op\":\"remove\",\"path\":\"/webhooks/$guard_index\"}]" >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: thief
  annotations: {ferry.dev/restore-from: "$uid"}
spec:
  nodeName: $thief_node
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sleep", "600"]
EOF
ok "pod thief created on $thief_node with ferry.dev/restore-from=$uid (the guard is off)"
kubectl replace -f - <<<"$saved" >/dev/null
refused() { k get pod thief -o jsonpath='{.status.containerStatuses[0].state.waiting.message}' | grep -q 'bound to'; }
wait_until 90 "ferry-runc refused the restore (snapshot bound to another pod)" refused
msg="$(k get pod thief -o jsonpath='{.status.containerStatuses[0].state.waiting.message}')"
echo "  $msg" | head -c 400; echo
[[ -z "$(k get pod thief -o jsonpath='{.status.containerStatuses[0].state.running}')" ]] || fail "the thief's container runs"
# kubelet retries the refused create; each refusal is recorded as a
# terminated state with reason StartError (the runtime never started the
# process). Any other terminated state means the container ran.
last="$(k get pod thief -o jsonpath='{.status.containerStatuses[0].lastState.terminated.reason}')"
[[ -z "$last" || "$last" == StartError ]] || fail "the thief's container ran (last state: terminated, $last)"
ok "the thief's container never ran"
k delete pod thief --wait=false >/dev/null

check "the Migration still rolls back cleanly"
k patch migration move-victim --type=merge -p '{"spec":{"cancel":true}}' >/dev/null
"$CLUSTER_DIR/fault.sh" unpause "$dst"
wait_until 120 "RolledBack" bash -c "[[ \$(kubectl -n $E2E_NS get migration move-victim -o jsonpath='{.status.phase}') == RolledBack ]]"
wait_until 30 "victim Ready again" pod_ready victim
wait_until 30 "the snapshot is removed" bash -c "[[ ! -e $snap ]]"
ok "rolled back, snapshot removed"
