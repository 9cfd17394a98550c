#!/usr/bin/env bash
# CTest fixture setup of the e2e tier: `make cluster-up`'s script brings the
# local cluster up (cold or warm; the time is printed), then a second run
# must change nothing (idempotency: same node containers, all still Ready).
source "$(dirname "$0")/lib.sh"

check "cluster-up brings the cluster up"
t0=$SECONDS
out="$("$CLUSTER_DIR/up.sh" 2>&1)" || { echo "$out"; fail "cluster-up failed"; }
echo "$out"
ok "cluster-up took $((SECONDS - t0))s"
[[ "$out" == *"kubeconfig: $KUBECONFIG_PATH"* ]] || fail "cluster-up did not print the kubeconfig path"
[[ "$out" == *"shared storage: $FERRY_SHARED_DIR"* ]] || fail "cluster-up did not print the shared storage path"
[[ -s "$KUBECONFIG_PATH" ]] || fail "no kubeconfig at $KUBECONFIG_PATH"

check "a second cluster-up is idempotent"
ids_before="$(for n in $(node_names); do docker inspect -f '{{.Id}}' "$n"; done)"
t0=$SECONDS
"$CLUSTER_DIR/up.sh" >/dev/null 2>&1 || fail "second cluster-up failed"
ids_after="$(for n in $(node_names); do docker inspect -f '{{.Id}}' "$n"; done)"
[[ "$ids_before" == "$ids_after" ]] || fail "second cluster-up recreated node containers"
ok "second cluster-up kept every node container and took $((SECONDS - t0))s"
