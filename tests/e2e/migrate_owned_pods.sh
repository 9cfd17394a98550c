#!/usr/bin/env bash
# Owned pods (issue #7): a Deployment's pod and a StatefulSet's pod, each
# holding 256 MiB of in-memory state, opted in by the label
# ferry.dev/migratable=true in their templates (the webhook gives them the
# ferry RuntimeClass and the serving gate; the templates name neither).
# For each, a kubectl-applied Migration with no target (Ferry chooses);
# checked throughout and after:
#   - the frozen source is deleted (killed while frozen), its owner creates
#     the replacement, the webhook pins it to the target and marks it for
#     restore: the state checksum and counter come through;
#   - the StatefulSet pod keeps its name (db-0), with a new uid on the target;
#   - the owner's pods (not being deleted) never exceed the replica count,
#     and end at it with the owner reporting all replicas ready;
#   - at every sampled 100 ms window at most one copy runs on any node.
source "$(dirname "$0")/lib.sh"
use_namespace
mib="${E2E_MIGRATE_MIB:-256}"
mapfile -t nodes < <(node_names)

# owned_template NAME: the pod template both owners use (label app=NAME,
# container NAME, the statekeeper holding $mib MiB, readiness by TCP).
owned_template() {
  cat <<EOF2
    metadata:
      labels: {app: $1, ferry.dev/migratable: "true"}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: $1
        image: $WORKLOAD_IMAGE
        imagePullPolicy: Never
        command: ["/statekeeper", "--mem-mib", "$mib", "--port", "7777"]
        readinessProbe:
          tcpSocket: {port: 7777}
          periodSeconds: 1
EOF2
}

# owner_pods APP: "name uid node" of the pods labelled app=APP not being deleted.
owner_pods() {
  k get pods -l "app=$1" -o json |
    jq -r '.items[] | select(.metadata.deletionTimestamp == null) | "\(.metadata.name) \(.metadata.uid) \(.spec.nodeName)"'
}

# migrate_owned APP KIND: the whole check for the one pod of owner KIND/APP.
migrate_owned() {
  local app="$1" kind="$2" pod uid node sum_before
  wait_until 180 "$kind $app has its pod Ready" bash -c "[[ \$(kubectl -n $E2E_NS get pods -l app=$app -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status}') == True ]]"
  read -r pod uid node <<<"$(owner_pods "$app")"
  [[ "$(k get pod "$pod" -o jsonpath='{.spec.runtimeClassName}')" == ferry ]] ||
    fail "the webhook did not give $pod the ferry RuntimeClass"
  [[ "$(k get pod "$pod" -o jsonpath='{.spec.readinessGates[*].conditionType}')" == *ferry.dev/serving* ]] ||
    fail "the webhook did not give $pod the serving readiness gate"
  for _ in 1 2 3; do ask_pod "$pod" INCR >/dev/null; done
  sum_before="$(ask_pod "$pod" SUM)"
  read -r _ now _ expected <<<"$sum_before"
  [[ "$now" == "$expected" ]] || fail "checksum differs before the migration: $sum_before"
  ok "$pod (uid $uid) on $node: RuntimeClass and gate set by the webhook, count 3, $sum_before"

  check "$kind pod $pod: kubectl apply a Migration (Ferry chooses the target)"
  start_copy_sampler "$app" "${nodes[@]}"
  # The owner's live pods, sampled until the end: never more than 1.
  (while :; do echo "$(date +%s%3N) $(owner_pods "$app" | wc -l)"; sleep 0.2; done) >"/tmp/$E2E_NS-$app-count" 2>/dev/null &
  local counter=$!
  on_exit "kill $counter"
  sleep 1
  k apply -f - >/dev/null <<EOF2
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-$app}
spec: {podName: $pod}
EOF2
  final() { [[ "$(k get migration "move-$app" -o jsonpath='{.status.phase}')" =~ ^(Succeeded|Failed|RolledBack)$ ]]; }
  wait_until 300 "the Migration reached a final phase" final
  if [[ "$(k get migration "move-$app" -o jsonpath='{.status.phase}')" != Succeeded ]]; then
    k get migration "move-$app" -o yaml
    kubectl -n ferry-system logs deploy/ferry-operator --tail=30 2>&1 | tail -30
    kubectl -n ferry-system logs ds/ferry-agent --tail=30 --all-containers --prefix 2>&1 | tail -60
    fail "the Migration did not succeed"
  fi
  local m target target_node new_pod new_uid new_node
  m="$(k get migration "move-$app" -o json)"
  target="$(jq -r .status.targetPod <<<"$m")" target_node="$(jq -r .status.targetNode <<<"$m")"
  ok "Succeeded: $kind $(jq -r .status.ownerName <<<"$m") created $target on $target_node; durations $(jq -c .status.durations <<<"$m")"
  wait_until 60 "$target Ready" pod_ready "$target"
  sleep 1
  stop_copy_sampler
  kill "$counter" 2>/dev/null || true

  check "$kind: the replacement has the state, on the target, as the owner's only pod"
  read -r new_pod new_uid new_node <<<"$(owner_pods "$app")"
  [[ "$(owner_pods "$app" | wc -l)" == 1 ]] || fail "the owner has $(owner_pods "$app" | wc -l) pods"
  [[ "$new_pod" == "$target" && "$new_node" == "$target_node" && "$new_node" != "$node" ]] ||
    fail "the owner's pod is $new_pod on $new_node (Migration: $target on $target_node, source on $node)"
  [[ "$new_uid" != "$uid" ]] || fail "the pod was not replaced (same uid)"
  [[ "$(k get pod "$new_pod" -o jsonpath='{.metadata.annotations.ferry\.dev/restore-from}')" == "$(jq -r .metadata.uid <<<"$m")" ]] ||
    fail "the replacement is not marked for restore from this Migration"
  [[ "$(ask_pod "$new_pod" SUM)" == "$sum_before" ]] || fail "checksum after: $(ask_pod "$new_pod" SUM), before: $sum_before"
  [[ "$(ask_pod "$new_pod" COUNT)" == "count 3" ]] || fail "counter after the migration: $(ask_pod "$new_pod" COUNT)"
  [[ "$(ask_pod "$new_pod" CHECK)" == "check ok" ]] || fail "other state after restore"
  [[ "$(k logs "$new_pod" | grep -c '^statekeeper: pid')" == 1 ]] || fail "the restored container restarted (two start lines in its log)"
  ok "$new_pod (uid $new_uid) on $new_node: count 3, $sum_before, one start line in kubectl logs"
  if [[ "$kind" == StatefulSet ]]; then
    [[ "$new_pod" == "$pod" ]] || fail "the StatefulSet pod changed its name: $pod -> $new_pod"
    ok "the StatefulSet pod kept its name $pod"
  fi
  local max
  max="$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "/tmp/$E2E_NS-$app-count")"
  ((max <= 1)) || fail "the owner had $max live pods at once (replicas: 1)"
  ok "the owner's live pods never exceeded 1 in $(wc -l <"/tmp/$E2E_NS-$app-count") samples"
  rm -f "/tmp/$E2E_NS-$app-count"
  check_one_copy
}

check "a Deployment and a StatefulSet opted in by label, $mib MiB of state each"
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
$(owned_template web)
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 7777}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
$(owned_template db)
EOF
check "PostCopy of an owned pod is refused with a clear condition and touches nothing"
wait_until 180 "Deployment web has its pod Ready" bash -c "[[ \$(kubectl -n $E2E_NS get pods -l app=web -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status}') == True ]]"
read -r web_pod web_uid _ <<<"$(owner_pods web)"
k apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: postcopy-web}
spec: {podName: $web_pod, mode: PostCopy}
EOF
wait_until 30 "postcopy-web Failed" bash -c "[[ \$(kubectl -n $E2E_NS get migration postcopy-web -o jsonpath='{.status.phase}') == Failed ]]"
cond="$(k get migration postcopy-web -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}: {.status.conditions[?(@.type=="Failed")].message}')"
[[ "$cond" == "ModeUnsupported: "*"owned by ReplicaSet"*"use Cold"* ]] || fail "postcopy-web: $cond"
[[ "$(owner_pods web)" == "$web_pod $web_uid "* ]] || fail "the refusal touched $web_pod: $(owner_pods web)"
k delete migration postcopy-web >/dev/null
ok "$cond"

migrate_owned web Deployment
ready="$(k get deployment web -o jsonpath='{.status.readyReplicas}/{.status.replicas}/{.status.updatedReplicas}')"
[[ "$ready" == 1/1/1 ]] || fail "Deployment web: ready/replicas/updated $ready"
ok "Deployment web reports 1/1 ready"

migrate_owned db StatefulSet
wait_until 30 "StatefulSet db reports 1/1 ready" bash -c "[[ \$(kubectl -n $E2E_NS get statefulset db -o jsonpath='{.status.readyReplicas}/{.status.replicas}') == 1/1 ]]"
