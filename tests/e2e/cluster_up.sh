#!/usr/bin/env bash
# CTest fixture setup of the e2e tier: `make cluster-up`'s script brings the
# local cluster up (cold or warm; the time is printed), then a second run
# must change nothing (idempotency: same node containers, all still Ready).
# The suite starts from a cluster nothing else has touched: one left up
# (by `make demo`, which leaves Ferry installed, or by an interrupted run)
# is taken down first, as the suite's own cleanup would at its end.
source "$(dirname "$0")/lib.sh"

check "the suite starts from a fresh cluster"
left_up=()
for n in $(node_names); do
  [[ "$(container_state "$n")" == absent ]] || left_up+=("$n")
done
# Also when no node is up: a control plane alone keeps its objects in etcd.
"$CLUSTER_DIR/down.sh" >/dev/null || fail "cluster-down before the suite failed"
if ((${#left_up[@]} > 0)); then
  ok "took down the cluster left up (nodes ${left_up[*]})"
else
  ok "no node was up; cluster-down cleared whatever else was left"
fi

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
