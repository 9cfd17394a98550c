#!/usr/bin/env bash
# Ferry installed the way users install it (hack/install-ferry.sh: images
# from the Dockerfile loaded into the nodes, crds/, deploy/): an agent runs
# on every node, installed ferry-runc into the node and reported the node's
# CRIU and kernel on its Node; two operator replicas run, one of them
# leads; a re-run changes nothing.
source "$(dirname "$0")/lib.sh"

check "install"
"$FERRY_ROOT/hack/install-ferry.sh" || fail "install-ferry.sh"

check "one ready agent per node, each with ferry-runc installed and a report on its Node"
for n in $(node_names); do
  phase="$(kubectl -n ferry-system get pods -l app.kubernetes.io/name=ferry-agent --field-selector spec.nodeName="$n" -o jsonpath='{.items[0].status.phase}')"
  [[ "$phase" == Running ]] || fail "agent on $n is $phase"
  docker exec "$n" test -x /opt/ferry/bin/ferry-runc || fail "no ferry-runc on $n"
  docker exec "$n" cat /etc/ferry/ferry-runc.json | jq -e '.runtime == "/usr/local/sbin/runc"' >/dev/null || fail "ferry-runc config on $n"
  report="$(kubectl get node "$n" -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')"
  # The primary CRIU pin carries our lazy-dump-mode patch: the node image's
  # CRIU must be the patched build.
  jq -e '.criuVersion != "" and .criuCheck == true and (.lazyPages|type) == "boolean" and (.memDirtyTrack|type) == "boolean" and (.lazyDumpRead|type) == "boolean" and .pageTransferTls == true and (.criuVersion != "4.2.1" or .lazyDumpRead == true) and (.networkLock == "nftables" or .networkLock == "iptables") and .snapshotFormat == 3' <<<"$report" >/dev/null ||
    fail "report on $n: $report"
  ok "$n: $report"
done

check "two operator replicas, one leader"
ready="$(kubectl -n ferry-system get deployment ferry-operator -o jsonpath='{.status.readyReplicas}')"
[[ "$ready" == 2 ]] || fail "$ready operator replicas ready"
# Ready replicas need not have elected one yet (seen: an empty holder right
# after the rollout): the Lease gets a holder within a lease duration.
lease_holder() { kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
wait_until 60 "the operator's Lease has a holder" bash -c "$(declare -f lease_holder); [[ -n \"\$(lease_holder)\" ]]"
leader="$(lease_holder)"
kubectl -n ferry-system get pod "$leader" >/dev/null || fail "the Lease holder $leader is not an operator pod"
ok "leader $leader"

check "metrics endpoints answer"
op_ip="$(kubectl -n ferry-system get pod "$leader" -o jsonpath='{.status.podIP}')"
node_of_leader="$(kubectl -n ferry-system get pod "$leader" -o jsonpath='{.spec.nodeName}')"
scrape() { docker exec "$node_of_leader" bash -c "exec 3<>/dev/tcp/$op_ip/8080; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; timeout 5 cat <&3"; }
wait_until 30 "the operator's /metrics serves ferry_migrations" bash -c "$(declare -f scrape); node_of_leader=$node_of_leader op_ip=$op_ip; scrape | grep -q '^ferry_migrations{'"
agent="$(kubectl -n ferry-system get pods -l app.kubernetes.io/name=ferry-agent --field-selector spec.nodeName=ferry-worker-2 -o jsonpath='{.items[0].status.podIP}')"
wait_until 30 "an agent's /metrics serves its API request counts" bash -c "$(declare -f scrape); node_of_leader=ferry-worker-2 op_ip=$agent; sed_port() { :; }; docker exec ferry-worker-2 bash -c \"exec 3<>/dev/tcp/$agent/8090; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; timeout 5 cat <&3\" | grep -q '^ferry_kube_requests_total{'"
ok "operator and agent /metrics"

check "a second install changes nothing"
gen_before="$(kubectl -n ferry-system get ds ferry-agent -o jsonpath='{.metadata.generation}')"
"$FERRY_ROOT/hack/install-ferry.sh" >/dev/null 2>&1 || fail "second install"
[[ "$(kubectl -n ferry-system get ds ferry-agent -o jsonpath='{.metadata.generation}')" == "$gen_before" ]] || fail "the DaemonSet changed"
ok "idempotent"
