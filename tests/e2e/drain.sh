#!/usr/bin/env bash
# Acceptance: `kubectl drain` of a node evicts its pods through the Eviction
# API, and their Deployment recreates them on the other nodes.
source "$(dirname "$0")/lib.sh"
use_namespace
app="drainme-$RANDOM"

check "a 3-replica Deployment spread over the nodes"
k apply -f - >/dev/null <<EOF2
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $app
spec:
  replicas: 3
  selector:
    matchLabels: {app: $app}
  template:
    metadata:
      labels: {app: $app}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels: {app: $app}
      containers:
      - name: statekeeper
        image: $WORKLOAD_IMAGE
        imagePullPolicy: Never
        args: ["--port", "7000", "--mem-mib", "8"]
        readinessProbe:
          tcpSocket: {port: 7000}
          periodSeconds: 1
EOF2
available() { [[ "$(k get deployment "$app" -o jsonpath='{.status.availableReplicas}')" == 3 ]]; }
wait_until 90 "3 replicas available" available
k get pods -l app="$app" -o wide
victim="$(k get pods -l app="$app" -o jsonpath='{.items[0].spec.nodeName}')"
mapfile -t victim_pods < <(k get pods -l app="$app" --field-selector spec.nodeName="$victim" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
ok "draining $victim, which runs ${victim_pods[*]}"

check "kubectl drain $victim evicts its pods"
on_exit "kubectl uncordon $victim"
# Only this test's pods: other tests' leftovers must not block or be touched.
out="$(kubectl drain "$victim" --pod-selector="app=$app" --ignore-daemonsets --timeout=120s 2>&1)" ||
  { echo "$out"; fail "kubectl drain $victim failed"; }
echo "$out"
for p in "${victim_pods[@]}"; do
  [[ "$out" == *"evicting pod $E2E_NS/$p"* ]] || fail "drain did not evict $p through the Eviction API"
done
[[ "$(kubectl get node "$victim" -o jsonpath='{.spec.unschedulable}')" == true ]] || fail "$victim is not cordoned"
ok "evicted ${victim_pods[*]} (kubectl: 'evicting pod ...'), $victim cordoned"

check "the Deployment recreated them on the other nodes"
moved() {
  available || return 1
  [[ -z "$(k get pods -l app="$app" --field-selector spec.nodeName="$victim" -o name)" ]]
}
wait_until 90 "3 replicas available again, none on $victim" moved
k get pods -l app="$app" -o wide
for p in "${victim_pods[@]}"; do
  [[ -z "$(k get pod "$p" --ignore-not-found -o name)" ]] || fail "evicted pod $p still exists"
done
ok "all replicas run on nodes other than $victim"
