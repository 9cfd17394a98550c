#!/usr/bin/env bash
# `make demo`, the README's main command: bring up the local cluster,
# build and load the images, install Ferry (hack/install-ferry.sh), deploy
# a stateful demo service (statekeeper: 256 MiB of in-memory state and a
# counter, behind a Service), apply a Migration with kubectl, and print the
# evidence: the state before and after (asked through the Service), the
# nodes it moved from and to, and the phase timings. The cluster stays up
# with Ferry installed in ferry-system, for more Migrations by hand.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$here/cluster/lib.sh"
export KUBECONFIG="$KUBECONFIG_PATH"
export PATH="$FERRY_ROOT/.cache/bin:$PATH"
ns=ferry-demo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "local cluster"
make -s -C "$FERRY_ROOT" cluster-up | tail -2
step "install Ferry"
"$here/install-ferry.sh"

step "demo service: statekeeper (256 MiB of state) behind Service keeper in namespace $ns"
kubectl delete namespace "$ns" --wait=true --ignore-not-found >/dev/null
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<EOF
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
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 5
  # Ferry takes the pod out of the Service while it is frozen and lets the
  # restored copy in as soon as it runs.
  readinessGates: [{conditionType: ferry.dev/serving}]
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "256", "--port", "7777"]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sleep", "infinity"]
EOF
kubectl -n "$ns" wait --for=condition=Ready pod/keeper pod/client --timeout=180s >/dev/null
svc="$(kubectl -n "$ns" get service keeper -o jsonpath='{.spec.clusterIP}')"
ask() { kubectl -n "$ns" exec client -- sh -c "echo $1 | nc -w 3 $svc 7777"; }
for _ in $(seq 7); do ask INCR >/dev/null; done
src="$(kubectl -n "$ns" get pod keeper -o jsonpath='{.spec.nodeName}')"
before_count="$(ask COUNT)" before_sum="$(ask SUM)"
echo "keeper runs on $src; through the Service: $before_count, $before_sum"

step "kubectl apply -f - (Migration move-keeper) and kubectl wait"
kubectl -n "$ns" apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-keeper}
spec:
  podName: keeper
EOF
kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded migration/move-keeper --timeout=300s ||
  { kubectl -n "$ns" get migration move-keeper -o yaml; exit 1; }
kubectl -n "$ns" get migrations

step "evidence"
m="$(kubectl -n "$ns" get migration move-keeper -o json)"
target="$(jq -r .status.targetPod <<<"$m")"
kubectl -n "$ns" wait --for=condition=Ready "pod/$target" --timeout=60s >/dev/null
after_count="$(ask COUNT)" after_sum="$(ask SUM)"
printf '%-8s %-16s %-10s %s\n' "" node counter "memory checksum (now / at start)"
printf '%-8s %-16s %-10s %s\n' before "$src" "${before_count#count }" "${before_sum#sum }"
printf '%-8s %-16s %-10s %s\n' after "$(jq -r .status.targetNode <<<"$m")" "${after_count#count }" "${after_sum#sum }"
echo
echo "phase timeline:"
jq -r '.status.phaseTransitionTimestamps[] | "  \(.time)  \(.phase)"' <<<"$m"
echo "durations: $(jq -c .status.durations <<<"$m"), bytes checkpointed: $(jq -r .status.bytes.checkpointed <<<"$m")"
echo "the restored process's last log line: $(kubectl -n "$ns" logs "$target" | tail -1)"
if [[ "$before_count" == "$after_count" && "$before_sum" == "$after_sum" ]]; then
  echo "state identical after the move; pod $target serves the Service keeper"
else
  echo "STATE DIFFERS" >&2
  exit 1
fi
echo
echo "Ferry stays installed. Try: kubectl -n $ns apply a Migration of pod $target (KUBECONFIG=$KUBECONFIG_PATH)"
