#!/usr/bin/env bash
# Acceptance: a pod on each node (placed by the scheduler through node
# selectors), pod-to-pod traffic across nodes, a ClusterIP Service reached
# from a pod on another node (kube-proxy), the host reaching pod IPs through
# its routes, and kubectl logs / exec / port-forward (apiserver -> kubelet ->
# containerd streaming).
source "$(dirname "$0")/lib.sh"
use_namespace
mapfile -t nodes < <(node_names)

check "one statekeeper pod on each node"
for i in "${!nodes[@]}"; do statekeeper_pod "sk-$i" "${nodes[$i]}"; done
for i in "${!nodes[@]}"; do wait_until 90 "pod sk-$i Ready" pod_ready "sk-$i"; done
declare -A pod_ip=()
for i in "${!nodes[@]}"; do
  on="$(k get pod "sk-$i" -o jsonpath='{.spec.nodeName}')"
  [[ "$on" == "${nodes[$i]}" ]] || fail "sk-$i runs on $on, want ${nodes[$i]}"
  pod_ip[$i]="$(k get pod "sk-$i" -o jsonpath='{.status.podIP}')"
  ok "sk-$i on $on with IP ${pod_ip[$i]}"
done
k get pods -o wide

check "pod-to-pod traffic across nodes"
for i in "${!nodes[@]}"; do
  j=$(((i + 1) % ${#nodes[@]}))
  got="$(ask_from "sk-$i" "${pod_ip[$j]}" 7000 PID)"
  [[ "$got" == "pid 1" ]] || fail "sk-$i (${nodes[$i]}) -> sk-$j (${nodes[$j]}) answered '$got'"
  ok "sk-$i on ${nodes[$i]} -> sk-$j on ${nodes[$j]}: $got"
done

check "ClusterIP Service reached from a pod on another node"
k expose pod sk-1 --name sk-1 --port 80 --target-port 7000 >/dev/null
cip="$(k get service sk-1 -o jsonpath='{.spec.clusterIP}')"
endpoints_ready() { [[ -n "$(k get endpointslices -l kubernetes.io/service-name=sk-1 -o jsonpath='{.items[*].endpoints[*].addresses[*]}')" ]]; }
wait_until 30 "Service sk-1 has an endpoint" endpoints_ready
# kube-proxy on the client's node programs the rule asynchronously.
service_answers() { [[ "$(ask_from sk-0 "$cip" 80 INCR)" == "count 1" ]]; }
wait_until 30 "sk-0 on ${nodes[0]} reaches Service $cip:80 (backed by sk-1 on ${nodes[1]})" service_answers
got="$(ask_from sk-2 "$cip" 80 INCR)"
[[ "$got" == "count 2" ]] || fail "sk-2 via the Service got '$got', want 'count 2'"
got="$(ask_from sk-0 "${pod_ip[1]}" 7000 COUNT)"
[[ "$got" == "count 2" ]] || fail "sk-1's own counter is '$got': the Service did not reach sk-1"
ok "two INCRs through $cip from ${nodes[0]} and ${nodes[2]} landed in sk-1 on ${nodes[1]} ($got)"

check "the host reaches pod IPs through its routes"
for i in "${!nodes[@]}"; do
  exec 3<>"/dev/tcp/${pod_ip[$i]}/7000" || fail "host cannot connect to ${pod_ip[$i]}"
  echo PID >&3
  IFS= read -r -t 5 got <&3 || got="(no answer)"
  exec 3>&-
  [[ "$got" == "pid 1" ]] || fail "host -> sk-$i answered '$got'"
done
ok "host -> every pod: pid 1"

check "kubectl logs"
logs_have_ticks() { [[ "$(k logs sk-2)" == *$'\n'tick* ]]; }
wait_until 30 "kubectl logs sk-2 shows ticks" logs_have_ticks
logs="$(k logs sk-2)"
[[ "$logs" == "statekeeper: pid 1,"* ]] || fail "kubectl logs sk-2 lacks the start line: ${logs:0:200}"
ok "${logs%%$'\n'*}"

check "kubectl exec"
got="$(k exec sk-2 -- hostname)"
[[ "$got" == sk-2 ]] || fail "kubectl exec hostname gave '$got'"
got="$(k exec -i sk-0 -- sh -c 'read x; echo "got $x"' <<<"stdin-works")"
[[ "$got" == "got stdin-works" ]] || fail "kubectl exec -i gave '$got'"
ok "exec runs in the container, with stdin"

check "kubectl port-forward"
pf_log="$(mktemp)"
on_exit "rm -f $pf_log"
k port-forward pod/sk-2 0:7000 >"$pf_log" 2>&1 &
pf=$!
on_exit "kill $pf"
pf_port() { sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$pf_log"; }
pf_up() { [[ -n "$(pf_port)" ]]; }
wait_until 30 "port-forward listening" pf_up
port="$(pf_port)"
exec 3<>"/dev/tcp/127.0.0.1/$port"
echo COUNT >&3
IFS= read -r -t 10 got <&3 || got="(no answer)"
exec 3>&-
[[ "$got" == "count 0" ]] || fail "port-forward to sk-2 answered '$got'"
ok "127.0.0.1:$port -> sk-2:7000 answered '$got'"
