#!/usr/bin/env bash
# Acceptance: three nodes Ready, each with its own IP shown by
# `kubectl get nodes -o wide`, running the pinned kubelet and containerd;
# node container name == hostname == Node name; a pod CIDR per node; the
# shared storage directory is the same directory on the host and every node.
source "$(dirname "$0")/lib.sh"

check "kubectl get nodes -o wide"
kubectl get nodes -o wide
mapfile -t want < <(node_names)
mapfile -t have < <(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[[ "${have[*]}" == "${want[*]}" ]] || fail "nodes are '${have[*]}', want '${want[*]}'"
ok "${#have[@]} nodes: ${have[*]}"

for n in "${want[@]}"; do
  check "node $n: Ready, IP, versions, hostname, pod CIDR"
  node_is_ready "$n" || fail "$n is not Ready"
  ip="$(kubectl get node "$n" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
  [[ "$ip" == "$(node_ip "$n")" ]] || fail "$n InternalIP $ip, want $(node_ip "$n")"
  kubelet_v="$(kubectl get node "$n" -o jsonpath='{.status.nodeInfo.kubeletVersion}')"
  [[ "$kubelet_v" == "$KUBERNETES_VERSION" ]] || fail "$n kubelet $kubelet_v, want $KUBERNETES_VERSION"
  runtime_v="$(kubectl get node "$n" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')"
  [[ "$runtime_v" == "containerd://${CONTAINERD_VERSION#v}" ]] || fail "$n runtime $runtime_v, want containerd://${CONTAINERD_VERSION#v}"
  [[ "$(docker exec "$n" hostname)" == "$n" ]] || fail "$n: container hostname differs from the node name"
  runc_v="$(docker exec "$n" runc --version)"
  runc_v="${runc_v%%$'\n'*}"
  [[ "$runc_v" == "runc version ${RUNC_VERSION#v}" ]] || fail "$n: $runc_v, want ${RUNC_VERSION#v}"
  criu_v="$(docker exec "$n" criu --version)"
  criu_v="$(awk '/^Version/{print $2}' <<<"$criu_v")"
  [[ "$criu_v" == "$CRIU_VERSION" ]] || fail "$n: criu $criu_v, want $CRIU_VERSION"
  cidr="$(kubectl get node "$n" -o jsonpath='{.spec.podCIDR}')"
  [[ -n "$cidr" ]] || fail "$n has no pod CIDR"
  ok "$n Ready at $ip, kubelet $kubelet_v, $runtime_v, runc ${RUNC_VERSION#v}, criu $criu_v, pods $cidr"
done

check "shared storage $FERRY_SHARED_DIR is one directory on the host and every node"
probe="e2e-probe-$RANDOM"
on_exit "rm -rf $FERRY_SHARED_DIR/$probe"
mkdir -p "$FERRY_SHARED_DIR/$probe"
echo host >"$FERRY_SHARED_DIR/$probe/from-host"
for n in "${want[@]}"; do
  [[ "$(docker exec "$n" cat "$FERRY_SHARED_DIR/$probe/from-host")" == host ]] || fail "$n does not see the host's file"
  docker exec "$n" sh -c "echo $n >$FERRY_SHARED_DIR/$probe/from-$n"
done
for n in "${want[@]}"; do
  [[ "$(cat "$FERRY_SHARED_DIR/$probe/from-$n")" == "$n" ]] || fail "the host does not see $n's file"
  [[ "$(docker exec "${want[0]}" cat "$FERRY_SHARED_DIR/$probe/from-$n")" == "$n" ]] || fail "${want[0]} does not see $n's file"
done
ok "files written on the host and on each node are visible everywhere at $FERRY_SHARED_DIR"
