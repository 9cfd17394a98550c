#!/usr/bin/env bash
# `make cluster-up`: brings the local multi-node test cluster to its desired
# state, idempotently (a second run only checks, and repairs what a fault
# left behind: a killed node is recreated, a paused one unpaused, a
# disconnected one reconnected):
#   1. images (image.sh: node, pause, workload; cached by input)
#   2. the private Docker network `ferry-cluster` (internal: no route out)
#   3. the PKI and kubeconfigs (pki.sh)
#   4. the control plane on the host (controlplane.sh)
#   5. three privileged node containers (ferry-worker-1..3) running
#      containerd, kubelet and kube-proxy
#   6. routes to every node's pod CIDR, on the host and in every node
#   7. the pause and workload images loaded into every node's containerd
# and prints the kubeconfig and shared-storage paths. See README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=network.sh
source "$here/network.sh"

start=$SECONDS
[[ $EUID -eq 0 ]] || die "cluster-up needs root (privileged containers, routes)"
docker info >/dev/null 2>&1 || die "docker is not running"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy runc ctr containerd criu; do
  command -v "$b" >/dev/null || die "$b missing from $FERRY_REPO_BIN: run make setup"
done

# 1. images
node_image="$("$here/image.sh" node)"
"$here/image.sh" pause workload

# 2. network
ensure_network

# 3. PKI
"$here/pki.sh"

# 4. control plane
mkdir -p "$FERRY_SHARED_DIR" "$RUN_DIR" "$LOG_DIR"
"$here/controlplane.sh" start

# 5. nodes
node_config() { # node_config NAME: the per-node files mounted at /etc/ferry/node
  local n="$1" d="$STATE_DIR/nodes/$1"
  mkdir -p "$d"
  cp "$PKI_DIR/ca.crt" "$d/ca.crt"
  cp "$PKI_DIR/node-$n.kubeconfig" "$d/kubelet.kubeconfig"
  cp "$PKI_DIR/kube-proxy.kubeconfig" "$d/kube-proxy.kubeconfig"
  printf 'NODE_NAME=%s\nNODE_IP=%s\n' "$n" "$(node_ip "$n")" >"$d/node.env"
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $n
clusterCIDR: $FERRY_POD_CIDR
detectLocalMode: ClusterCIDR
clientConnection:
  kubeconfig: /etc/ferry/node/kube-proxy.kubeconfig
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables:
  syncPeriod: 10s
  minSyncPeriod: 1s
# conntrack limits are host-wide sysctls: leave the host's alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

create_node() {
  local n="$1" s="$NODES_STATE_DIR/$1"
  docker rm -f "$n" >/dev/null 2>&1 || true
  # A recreated node starts from empty containerd and kubelet state, and
  # registers afresh: a stale Node object would still look Ready for a while
  # (and its pods would never be cleaned up).
  kc delete node "$n" --ignore-not-found --wait=true >/dev/null
  rm -rf "$s" "$LOG_DIR/$n.prev"
  # The previous incarnation's logs (e.g. of a killed node) stay as <node>.prev.
  [[ -d "$LOG_DIR/$n" ]] && mv "$LOG_DIR/$n" "$LOG_DIR/$n.prev"
  mkdir -p "$s/containerd" "$s/kubelet" "$LOG_DIR/$n"
  node_config "$n"
  # Privileged in all but name: `docker run --privileged` fails here
  # ("unable to apply caps: operation not permitted") because this machine's
  # root has no CAP_SYS_RESOURCE in its bounding set, and --privileged asks
  # for every capability. So: every capability but that one, no seccomp or
  # AppArmor, unmasked /proc, every device allowed by the devices cgroup,
  # /dev/kmsg for kubelet, /dev/net/tun for `criu check`; the entrypoint remounts /sys and the cgroup
  # hierarchies read-write. --cgroupns=private gives each node its own cgroup
  # root, so three kubelets never share /kubepods.
  # /var/lib/containerd and /var/lib/kubelet are host directories on ext4:
  # overlayfs (containerd's snapshotter) cannot stack on the node's own
  # fuse-overlayfs root.
  docker run -d --pull never --name "$n" --hostname "$n" \
    --label ferry.cluster=1 \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    --device-cgroup-rule 'a *:* rwm' --device /dev/kmsg --device /dev/net/tun \
    --init --cgroupns=private \
    --network "$FERRY_NETWORK" --ip "$(node_ip "$n")" \
    --tmpfs /run --tmpfs /tmp \
    -v "$s/containerd:/var/lib/containerd" \
    -v "$s/kubelet:/var/lib/kubelet" \
    -v "$STATE_DIR/nodes/$n:/etc/ferry/node:ro" \
    -v "$LOG_DIR/$n:/var/log/ferry" \
    -v "$here/node/resolv.conf:/etc/resolv.conf:ro" \
    -v "$FERRY_SHARED_DIR:$FERRY_SHARED_DIR" \
    -v /lib/modules:/lib/modules:ro \
    "$node_image" >/dev/null
  log "node $n: started ($(node_ip "$n"))"
}

for n in $(node_names); do
  state="$(container_state "$n")"
  image="$(docker inspect -f '{{.Config.Image}}' "$n" 2>/dev/null || true)"
  if [[ "$state" == paused ]]; then
    docker unpause "$n" >/dev/null
    log "node $n: unpaused"
    state=running
  fi
  if [[ "$state" != running || "$image" != "$node_image" ]]; then
    create_node "$n"
  elif ! node_connected "$n"; then
    connect_node "$n"
    log "node $n: reconnected"
  fi
done

# 6. routes: each node's pod CIDR is known once the controller-manager has
# allocated it to the registered Node.
has_pod_cidr() { [[ -n "$(kc get node "$1" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)" ]]; }
for n in $(node_names); do
  wait_for 90 "node $n to register and get a pod CIDR" has_pod_cidr "$n" || {
    tail -20 "$LOG_DIR/$n/kubelet.log" >&2
    die "node $n did not register"
  }
done
sync_routes

# 7. images into every node's containerd
"$here/load.sh" "$PAUSE_IMAGE" "$WORKLOAD_IMAGE"

node_ready() {
  [[ "$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
for n in $(node_names); do
  wait_for 120 "node $n Ready" node_ready "$n" || {
    kc describe node "$n" | tail -30 >&2
    die "node $n is not Ready"
  }
done
kc get nodes -o wide >&2
log "cluster up in $((SECONDS - start))s"
echo "kubeconfig: $KUBECONFIG_PATH"
echo "shared storage: $FERRY_SHARED_DIR (same path on the host and in every node)"
