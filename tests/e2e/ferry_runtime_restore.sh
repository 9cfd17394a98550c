#!/usr/bin/env bash
# The node-agent core on the real cluster, driven by hand (what the agents
# do for a Migration, step by step): ferry-runc, installed by the agent
# DaemonSet as the `ferry` RuntimeClass handler, runs ordinary pods through
# containerd's shim; a pod annotated ferry.dev/restore-from is refused with
# a clear kubelet event while its snapshot does not exist (ferry-runc
# configured not to wait); the source pod's container is checkpointed
# frozen into the shared storage by `ferry-agent checkpoint` run in the
# agent pod of its node; kubelet's next attempt restores it on another node
# with its memory, counter, files, pipes, sockets, threads, timer and child
# process; kubectl exec and logs work on it; the source is deleted and
# killed while frozen, so exactly one copy ever runs. (The pods are created
# as the operator would create them, with its service account.)
source "$(dirname "$0")/lib.sh"
use_namespace
src_node=ferry-worker-1 dst_node=ferry-worker-2
mig="e2e-$RANDOM"

check "Ferry is installed (ferry_install): ferry-runc on every node, an agent pod per node"
agent_on() { kubectl -n ferry-system get pods -l app.kubernetes.io/name=ferry-agent --field-selector spec.nodeName="$1" -o jsonpath='{.items[0].metadata.name}'; }
agent_src="$(agent_on "$src_node")"
[[ -n "$agent_src" ]] || fail "no ferry-agent on $src_node (run after e2e.ferry_install)"
for n in ferry-worker-1 ferry-worker-2 ferry-worker-3; do
  docker exec "$n" test -x /opt/ferry/bin/ferry-runc || fail "no ferry-runc on $n"
  # Refuse at once instead of waiting for the snapshot (the agent's
  # setting), so the refusal is visible; the agent's config comes back after.
  docker exec "$n" cp /etc/ferry/ferry-runc.json /etc/ferry/ferry-runc.json.e2e-saved
  on_exit "docker exec $n mv /etc/ferry/ferry-runc.json.e2e-saved /etc/ferry/ferry-runc.json"
  docker exec "$n" sh -c "sed 's/\"snapshotWaitSeconds\": *[0-9]*/\"snapshotWaitSeconds\": 0/' /etc/ferry/ferry-runc.json.e2e-saved >/etc/ferry/ferry-runc.json"
  docker exec "$n" grep -q '"snapshotWaitSeconds": 0' /etc/ferry/ferry-runc.json || fail "ferry-runc config on $n"
done
on_exit "rm -rf /var/lib/ferry-shared/snapshots/$mig"
agent() { kubectl -n ferry-system exec "$agent_src" -- /usr/local/bin/ferry-agent "$@" --runtime /opt/ferry/bin/runc --criu /usr/local/sbin/criu; }
ok "agent $agent_src on $src_node"

# Created as the operator's service account: only the operator may create a
# pod with the restore annotation (the guard webhook; e2e.security).
pod() { # pod NAME NODE [ANNOTATION]
  k apply --as=system:serviceaccount:ferry-system:ferry-operator -f - >/dev/null <<EOF2
apiVersion: v1
kind: Pod
metadata:
  name: $1
  annotations: {${3:-}}
spec:
  nodeName: $2
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: ferry.local/statekeeper:dev
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "64", "--port", "7777"]
EOF2
}
ask() { k exec "$1" -- sh -c "echo $2 | nc -w 5 127.0.0.1 7777"; }

check "a pod on the ferry RuntimeClass runs through ferry-runc (pass-through)"
pod source "$src_node"
wait_until 60 "source Ready" pod_ready source
for _ in 1 2 3; do ask source INCR >/dev/null; done
sum="$(ask source SUM)"
[[ "$(ask source COUNT)" == "count 3" ]] || fail "counter on the source"
ok "source state: $sum"

check "a restore pod without its snapshot is refused with a clear event"
pod target "$dst_node" "ferry.dev/restore-from: $mig"
refused() { k get events --field-selector involvedObject.name=target -o jsonpath='{.items[*].message}' | grep -q "ferry-runc: restore of container app refused"; }
wait_until 60 "kubelet event names ferry-runc's refusal" refused
[[ "$(k get pod target -o jsonpath='{.status.containerStatuses[0].ready}')" != true ]] || fail "target ran without a snapshot"

check "ferry-agent checkpoints the source frozen into the shared storage, bound to the target pod"
uid="$(k get pod target -o jsonpath='{.metadata.uid}')"
cid="$(k get pod source -o jsonpath='{.status.containerStatuses[0].containerID}')"
cid="${cid#containerd://}"
agent checkpoint --container-id "$cid" --migration-uid "$mig" --namespace "$E2E_NS" \
  --pod-name target --pod-uid "$uid" --container app || fail "checkpoint"
state="$(docker exec "$src_node" /usr/local/sbin/runc --root /run/containerd/runc/k8s.io state "$cid" | jq -r .status)"
[[ "$state" == paused ]] || fail "source is $state, not frozen"
ok "source frozen, snapshot published"

check "kubelet's next attempt restores the target on $dst_node with all its state"
wait_until 120 "target Ready" pod_ready target
[[ "$(ask target COUNT)" == "count 3" ]] || fail "counter after restore"
[[ "$(ask target SUM)" == "$sum" ]] || fail "memory checksum after restore"
check_state="$(ask target CHECK)"
[[ "$check_state" == "check ok" ]] || fail "other state after restore: $check_state"
# The restored process logs a tick a second on the new container's stdout.
logged() { k logs target | grep -q "count 3"; }
wait_until 15 "kubectl logs shows the restored process's output" logged
ok "restored on $(k get pod target -o jsonpath='{.spec.nodeName}'): $(ask target SUM)"

check "the source is deleted and killed while frozen: one copy only"
k delete pod source --wait=false >/dev/null
agent kill-frozen --container-id "$cid" || fail "kill-frozen"
gone() { ! k get pod source >/dev/null 2>&1; }
wait_until 60 "source pod gone" gone
[[ "$(ask target COUNT)" == "count 3" ]] || fail "target after the source died"
ok "one copy, on $dst_node"
