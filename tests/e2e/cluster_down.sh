#!/usr/bin/env bash
# CTest fixture cleanup of the e2e tier, and the acceptance check that
# `make cluster-down` leaves nothing behind: no node containers, no Docker
# network or bridge, no firewall rule, no routes to the pod/Service ranges,
# no control-plane or node processes, no mounts or cgroups of ours, no node
# state directories. A second cluster-down (nothing up) must succeed too.
source "$(dirname "$0")/lib.sh"

# Whatever ran in a node (kubelet, containerd, shims, pods) ran in cgroups
# below the node container's: remember the containers to look for them after.
node_ids=()
for n in $(node_names); do
  id="$(docker inspect -f '{{.Id}}' "$n" 2>/dev/null)" && node_ids+=("$id")
done

check "cluster-down"
"$CLUSTER_DIR/down.sh" || fail "cluster-down failed"

leftovers=()
left() { leftovers+=("$*"); echo "   leftover: $*"; }

check "no containers"
for c in $(docker ps -aq --filter label=ferry.cluster=1); do left "container $c"; done
for n in $(node_names); do [[ "$(container_state "$n")" == absent ]] || left "container $n"; done

check "no networks"
docker network inspect "$FERRY_NETWORK" >/dev/null 2>&1 && left "docker network $FERRY_NETWORK"
for nw in $(docker network ls -q --filter label=ferry.cluster=1); do left "docker network $nw"; done
ip link show "$FERRY_BRIDGE" >/dev/null 2>&1 && left "bridge $FERRY_BRIDGE"
if iptables -w -S DOCKER-USER 2>/dev/null | grep -F -- "$FERRY_FW_COMMENT" >/dev/null; then left "iptables DOCKER-USER rule"; fi

check "no routes"
routes="$(ip route show)"
pod_prefix="${FERRY_POD_CIDR%.*.*/*}." svc_prefix="${FERRY_SERVICE_CIDR%.*.*/*}." node_prefix="${FERRY_NODE_SUBNET%.*/*}."
while read -r r; do
  [[ "$r" == *"$pod_prefix"* || "$r" == *"$svc_prefix"* || "$r" == *"$node_prefix"* || "$r" == *"$FERRY_BRIDGE"* ]] && left "route: $r"
done <<<"$routes"

check "no processes"
for pf in "$RUN_DIR"/*.pid; do [[ -e "$pf" ]] && left "pidfile $pf"; done
for p in /proc/[0-9]*; do
  { cmd="$(tr '\0' ' ' <"$p/cmdline")" && cg="$(<"$p/cgroup")"; } 2>/dev/null || continue
  # Our control plane: its flags name our state directory.
  [[ "$cmd" == *"$STATE_DIR"* ]] && left "process ${p#/proc/}: ${cmd:0:120}"
  # Anything that ran inside a node container (the node's own processes and
  # every pod container below it).
  for id in "${node_ids[@]}"; do
    [[ "$cg" == *"$id"* ]] && left "process ${p#/proc/} from node container ${id:0:12}: ${cmd:0:120}"
  done
done

check "no mounts"
while read -r m; do
  case "$m" in
  "$NODES_STATE_DIR"* | "$STATE_DIR"* | "$FERRY_SHARED_DIR"* | */ferry-e2e* | */kubelet/pods/*) left "mount $m" ;;
  esac
done < <(findmnt -rn -o TARGET)

check "no cgroups"
for d in /sys/fs/cgroup/*/; do
  [[ -d "$d/kubepods" ]] && left "cgroup ${d}kubepods"
  for id in "${node_ids[@]}"; do
    [[ -d "${d}docker/$id" ]] && left "cgroup ${d}docker/${id:0:12}"
  done
done

check "no node state"
[[ -e "$NODES_STATE_DIR" ]] && left "directory $NODES_STATE_DIR"
[[ -e "$STATE_DIR/etcd" ]] && left "directory $STATE_DIR/etcd"
[[ -e "$FERRY_SHARED_DIR" ]] && left "directory $FERRY_SHARED_DIR"
[[ -e "$KUBECONFIG_PATH" ]] && left "kubeconfig $KUBECONFIG_PATH (names an address no longer on this host)"

((${#leftovers[@]} == 0)) || fail "${#leftovers[@]} leftover(s) after cluster-down"
ok "nothing left: containers, networks, routes, processes, mounts, cgroups, state"

check "cluster-down with nothing up is safe"
"$CLUSTER_DIR/down.sh" || fail "second cluster-down failed"
ok "second cluster-down succeeded"
