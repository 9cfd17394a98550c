#!/usr/bin/env bash
# The fault matrix of issue #7, each fault injected while a Migration runs
# (a statekeeper pod whose checksum and counter are checked afterwards):
#   1. the operator leader killed         -> the other replica finishes it
#   2. the kube-apiserver restarted       -> the migration completes
#  2b. the API refuses the source pod's   -> the agent retries; the migration
#      status update as it leaves its        completes, never rolled back
#      Services
#   3. the webhook certificate rotated    -> no migration or pod create fails
#   4. the source node's agent killed     -> its dump ends on its own; rolled
#      while CRIU dumps                      back, the source keeps its state
#   5. the target node killed mid-restore -> rolled back (reason given), the
#                                            source resumes with its state;
#                                            make cluster-up repairs the node
source "$(dirname "$0")/lib.sh"
use_namespace
w1=ferry-worker-1 w2=ferry-worker-2 w3=ferry-worker-3

keeper() { # keeper NAME NODE MIB
  ferry_pod_yaml "$1" "$2" "$3" | k apply -f - >/dev/null
  wait_until 120 "$1 Ready on $2" pod_ready "$1"
}
# prime POD: 4 increments (checked); prints the checksum line.
prime() {
  for _ in 1 2 3 4; do ask_pod "$1" INCR >/dev/null; done
  [[ "$(ask_pod "$1" COUNT)" == "count 4" ]] || fail "$1: $(ask_pod "$1" COUNT) after 4 increments"
  ask_pod "$1" SUM
}
migrate() { # migrate NAME POD TARGET [PROGRESS_SECONDS]
  k apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: $1}
spec: {podName: $2, targetNode: $3${4:+, timeouts: {progressSeconds: $4\}}}
EOF
}
phase() { k get migration "$1" -o jsonpath='{.status.phase}'; }
in_phase() { [[ "$(phase "$1")" == "$2" ]]; }
final() { [[ "$(phase "$1")" =~ ^(Succeeded|Failed|RolledBack)$ ]]; }
# state_in POD SUM: the pod answers with this checksum and count 4.
state_in() {
  [[ "$(ask_pod "$1" SUM)" == "$2" ]] || fail "$1: checksum $(ask_pod "$1" SUM), expected $2"
  [[ "$(ask_pod "$1" COUNT)" == "count 4" ]] || fail "$1: $(ask_pod "$1" COUNT), expected count 4"
}
succeeded() { # succeeded MIGRATION SUM: Succeeded, state intact in the target pod
  wait_until 300 "$1 final" final "$1"
  if [[ "$(phase "$1")" != Succeeded ]]; then
    k get migration "$1" -o yaml
    fail "$1 ended $(phase "$1")"
  fi
  local target
  target="$(k get migration "$1" -o jsonpath='{.status.targetPod}')"
  wait_until 60 "$target Ready" pod_ready "$target"
  state_in "$target" "$2"
  ok "$1 Succeeded; $target has count 4 and $2"
}

check "1. the operator leader killed mid-migration: the other replica finishes it"
keeper f1 $w2 256
sum="$(prime f1)"
leader="$(kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}')"
migrate m1 f1 $w1
kubectl -n ferry-system delete pod "$leader" --grace-period=0 --force >/dev/null 2>&1
ok "leader $leader killed right after kubectl apply (phase then: $(phase m1))"
succeeded m1 "$sum"
new_leader="$(kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}')"
[[ -n "$new_leader" && "$new_leader" != "$leader" ]] || fail "leader after the kill: '$new_leader'"
ok "the Lease moved to $new_leader"
wait_until 120 "two operator replicas ready again" bash -c "[[ \$(kubectl -n ferry-system get deployment ferry-operator -o jsonpath='{.status.readyReplicas}') == 2 ]]"

check "2. the kube-apiserver restarted mid-migration: the migration completes"
keeper f2 $w3 256
sum="$(prime f2)"
migrate m2 f2 $w2
wait_until 30 "m2 Checkpointing" in_phase m2 Checkpointing
kill -KILL "$(cat "$RUN_DIR/kube-apiserver.pid")"
ok "kube-apiserver killed (phase then: Checkpointing)"
sleep 2
"$CLUSTER_DIR/controlplane.sh" start >/dev/null 2>&1 || fail "kube-apiserver did not come back"
ok "kube-apiserver restarted"
succeeded m2 "$sum"

check "2b. the API refuses the source pod's status update as it leaves its Services: the agent retries, the migration completes"
# Check 2 hits this window only by chance. Here a ValidatingAdmissionPolicy
# refuses exactly that update (ferry.dev/serving False on f2b) until the
# source agent has been refused. The agent saved its record as Preparing
# before the call, so its retry carries on; a retry that took the record for
# a dump cut short would roll the Migration back (session 7's bug).
policy=ferry-e2e-refuse-unserving
kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy "$policy" --ignore-not-found >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: $policy}
spec:
  failurePolicy: Fail
  matchConstraints:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $E2E_NS}}
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [pods/status]}
  validations:
  - expression: >-
      !(object.metadata.name == 'f2b' && has(object.status.conditions) &&
      object.status.conditions.exists(c, c.type == 'ferry.dev/serving' && c.status == 'False'))
    message: ferry e2e refuses this update on purpose
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: $policy}
spec: {policyName: $policy, validationActions: [Deny]}
EOF
keeper f2b $w3 64
sum="$(prime f2b)"
unserving_refused() {
  ! k patch pod f2b --subresource=status --type=strategic --dry-run=server \
    -p '{"status":{"conditions":[{"type":"ferry.dev/serving","status":"False"}]}}' >/dev/null 2>&1
}
wait_until 60 "the policy refuses f2b's update (server-side dry run)" unserving_refused
agent="$(kubectl -n ferry-system get pods -l app.kubernetes.io/name=ferry-agent --field-selector spec.nodeName=$w3 -o jsonpath='{.items[0].metadata.name}')"
migrate m2b f2b $w1
refusals() { kubectl -n ferry-system logs "$agent" | grep -c "m/$E2E_NS/m2b.*refuses this update on purpose"; }
wait_until 60 "the agent on $w3 refused" refusals  # grep -c fails while the count is 0
[[ "$(phase m2b)" == Checkpointing ]] || fail "m2b is $(phase m2b) after the refusal, expected Checkpointing"
[[ "$(k get pod f2b -o jsonpath='{.status.conditions[?(@.type=="ferry.dev/serving")].status}')" == True ]] ||
  fail "f2b left its Services although the update was refused"
ok "the agent was refused $(refusals) time(s); m2b is still Checkpointing and f2b still serves"
kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy "$policy" >/dev/null
succeeded m2b "$sum"

check "3. the webhook certificate rotated while a Deployment pod migrates: nothing fails"
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, ferry.dev/migratable: "true"}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: $WORKLOAD_IMAGE
        imagePullPolicy: Never
        command: ["/statekeeper", "--mem-mib", "64", "--port", "7777"]
EOF
wait_until 120 "web Ready" bash -c "[[ \$(kubectl -n $E2E_NS get deployment web -o jsonpath='{.status.readyReplicas}') == 1 ]]"
web="$(k get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"
web_node="$(k get pod "$web" -o jsonpath='{.spec.nodeName}')"
sum="$(prime "$web")"
fingerprint() { kubectl -n ferry-system get secret ferry-webhook-tls -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl x509 -noout -fingerprint -sha256; }
old_cert="$(fingerprint)"
# Opted-in pods created every 0.5 s through the rotation: the steer webhook
# (failurePolicy Fail) must answer every time.
(for i in $(seq 1 40); do
  kubectl -n "$E2E_NS" run "probe-$i" --image="$WORKLOAD_IMAGE" --image-pull-policy=Never --labels=ferry.dev/migratable=true,probe=yes \
    --restart=Never --command -- /bin/true >/dev/null 2>"/tmp/$E2E_NS-probe-$i.err" || echo "probe-$i" >>"/tmp/$E2E_NS-probe-failures"
  sleep 0.5
done) &
probes=$!
on_exit "kill $probes; rm -f /tmp/$E2E_NS-probe-*"
kubectl -n ferry-system patch secret ferry-webhook-tls --type=json \
  -p '[{"op":"remove","path":"/data/tls.crt"},{"op":"remove","path":"/data/tls.key"}]' >/dev/null
ok "the serving certificate removed from the Secret: the operators must issue and load a new one"
target_node=$w1
[[ "$web_node" == "$w1" ]] && target_node=$w2
migrate m3 "$web" "$target_node"
rotated() { [[ "$(fingerprint 2>/dev/null)" != "$old_cert" && -n "$(fingerprint 2>/dev/null)" ]]; }
wait_until 30 "a new serving certificate in the Secret" rotated
succeeded m3 "$sum"
wait "$probes" || true
[[ ! -s "/tmp/$E2E_NS-probe-failures" ]] || fail "pod creates failed during the rotation: $(cat "/tmp/$E2E_NS-probe-failures") $(cat /tmp/$E2E_NS-probe-*.err | head -3)"
[[ "$(k get pods -l probe=yes -o name | wc -l)" == 40 ]] || fail "not all 40 probe pods exist"
for p in $(kubectl -n ferry-system get pods -l app.kubernetes.io/name=ferry-operator -o name); do
  loads="$(kubectl -n ferry-system logs "$p" | grep -c 'serving webhook certificate from Secret' || true)"
  ((loads >= 1)) || fail "$p never loaded a certificate"
  echo "  $p loaded a certificate $loads time(s)"
done
ok "certificate rotated ($old_cert -> $(fingerprint)); 40 opted-in pods created through it, none refused"
k delete pods -l probe=yes --wait=false >/dev/null

check "4. the source node's agent killed mid-dump: the dump ends on its own, rolled back with the state"
keeper f4 $w1 1024
sum="$(prime f4)"
cid="$(k get pod f4 -o jsonpath='{.status.containerStatuses[0].containerID}')"
cid="${cid#containerd://}"
migrate m4 f4 $w3
# Killed (SIGKILL, as an OOM kill or a forced restart does) once its CRIU
# dumps, seen from the node: the dump runs in ferry-checkpoint/<container>
# (node-agent/checkpoint/checkpoint_cgroups.h), outside the agent's
# container, whose every process the runtime kills as the agent dies.
docker exec $w1 timeout 120 bash -c "
  until cat /sys/fs/cgroup/*/ferry-checkpoint/$cid/cgroup.procs \
            /sys/fs/cgroup/ferry-checkpoint/$cid/cgroup.procs 2>/dev/null | grep -q .; do
    sleep 0.005
  done
  pkill -KILL -x ferry-agent" || fail "the dump of f4 ($cid) never started in its checkpoint cgroup on $w1"
ok "agent on $w1 killed while its CRIU dumped f4 (phase then: $(phase m4))"
wait_until 300 "m4 final" final m4
[[ "$(phase m4)" == RolledBack ]] || { k get migration m4 -o yaml; fail "m4 ended $(phase m4)"; }
reason="$(k get migration m4 -o jsonpath='{.status.failure.reason}')"
[[ "$reason" == AgentRestarted ]] || fail "m4 rolled back for $reason, not AgentRestarted"
wait_until 60 "f4 Ready again" pod_ready f4
state_in f4 "$sum"
[[ "$(k get pod f4 -o jsonpath='{.status.containerStatuses[0].restartCount}')" == 0 ]] ||
  fail "f4's container restarted: its state did not survive the kill"
docker exec $w1 grep -q "Dumping finished successfully" "/var/lib/ferry/work/$cid/dump.log" ||
  fail "CRIU did not finish the dump the killed agent started: $(docker exec $w1 tail -3 "/var/lib/ferry/work/$cid/dump.log")"
ok "rolled back (AgentRestarted) once the orphaned dump ended well: f4 serves count 4 and $sum, never restarted"
wait_until 120 "the agent DaemonSet is ready again" bash -c "[[ \$(kubectl -n ferry-system get ds ferry-agent -o jsonpath='{.status.numberReady}') == 3 ]]"

check "5. the target node killed mid-restore: rolled back, the source resumes"
# The target must not host the operator leader: hung, it would hold the
# Lease until it expires, and this test is not about that.
leader_node="$(kubectl -n ferry-system get pod "$(kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}')" -o jsonpath='{.spec.nodeName}')"
t5=$w3
[[ "$leader_node" == "$w3" ]] && t5=$w2
keeper f5 $w1 256
sum="$(prime f5)"
on_exit "$CLUSTER_DIR/fault.sh unpause $t5"
# Hung first (still Ready for the node grace period), so the replacement
# can never restore before the kill, however fast the checkpoint is.
"$CLUSTER_DIR/fault.sh" pause $t5
migrate m5 f5 $t5 15
wait_until 60 "m5 Restoring (snapshot published, the target hangs)" in_phase m5 Restoring
"$CLUSTER_DIR/fault.sh" kill $t5
ok "target node $t5 killed while the replacement waited to restore"
wait_until 240 "m5 final" final m5
[[ "$(phase m5)" == RolledBack ]] || { k get migration m5 -o yaml; fail "m5 ended $(phase m5)"; }
reason="$(k get migration m5 -o jsonpath='{.status.failure.reason}')"
[[ -n "$reason" ]] || fail "no reason in status"
wait_until 60 "f5 Ready again" pod_ready f5
state_in f5 "$sum"
ok "RolledBack ($reason: $(k get migration m5 -o jsonpath='{.status.failure.message}')); f5 serves count 4 and $sum on $w1"
check "make cluster-up repairs $t5"
"$CLUSTER_DIR/up.sh" >/dev/null 2>&1 || fail "cluster-up after the kill failed"
wait_until 120 "$t5 Ready" node_is_ready $t5
# The node was recreated: give it Ferry's images again (the others skip them).
"$CLUSTER_DIR/load.sh" "$(kubectl -n ferry-system get ds ferry-agent -o jsonpath='{.spec.template.spec.containers[0].image}')" \
  "$(kubectl -n ferry-system get deployment ferry-operator -o jsonpath='{.spec.template.spec.containers[0].image}')" >/dev/null ||
  fail "reloading Ferry's images"
wait_until 180 "the agent DaemonSet is ready on all nodes" bash -c "[[ \$(kubectl -n ferry-system get ds ferry-agent -o jsonpath='{.status.numberReady}') == 3 ]]"
