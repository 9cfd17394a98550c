# Shared settings and helpers of the local cluster scripts (up, down, load,
# fault, image). Everything the cluster creates is named here once, so that
# `down.sh` can remove exactly what `up.sh` made and nothing else.
# shellcheck shell=bash disable=SC2034 # settings are used by the scripts that source this

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$CLUSTER_DIR/../lib.sh"

export PATH="$FERRY_REPO_BIN:$PATH"

# --- names and addresses (the fixed interface other tools rely on) ---------
FERRY_NETWORK="${FERRY_NETWORK:-ferry-cluster}"
FERRY_NODE_COUNT="${FERRY_NODE_COUNT:-3}"
FERRY_NODE_PREFIX="${FERRY_NODE_PREFIX:-ferry-worker-}"
# Private subnets that exist only inside this machine: the Docker network
# (node IPs), the pod network (one /24 per node, allocated by the
# controller-manager) and the Service network (kube-proxy DNAT inside nodes).
FERRY_NODE_SUBNET="${FERRY_NODE_SUBNET:-10.213.0.0/24}"
FERRY_GATEWAY_IP="${FERRY_GATEWAY_IP:-10.213.0.1}" # host side of the network: the apiserver
FERRY_NODE_IP_PREFIX="${FERRY_NODE_IP_PREFIX:-10.213.0.}" # node N gets .(10+N): .11 .12 .13
FERRY_POD_CIDR="${FERRY_POD_CIDR:-10.244.0.0/16}"
FERRY_SERVICE_CIDR="${FERRY_SERVICE_CIDR:-10.96.0.0/16}"
FERRY_APISERVER_SERVICE_IP="${FERRY_APISERVER_SERVICE_IP:-10.96.0.1}"
# Host ports (loopback or the gateway address only). Not the defaults, so a
# developer's own etcd or kube components on the defaults do not collide.
FERRY_APISERVER_PORT="${FERRY_APISERVER_PORT:-16443}"
FERRY_ETCD_CLIENT_PORT="${FERRY_ETCD_CLIENT_PORT:-12379}"
FERRY_ETCD_PEER_PORT="${FERRY_ETCD_PEER_PORT:-12380}"
FERRY_KCM_PORT="${FERRY_KCM_PORT:-11257}"
FERRY_SCHED_PORT="${FERRY_SCHED_PORT:-11259}"
# A killed node's Node goes NotReady this long after its last heartbeat
# (kube-controller-manager --node-monitor-grace-period); pods on a NotReady
# or unreachable node are evicted this many seconds later.
FERRY_NODE_GRACE="${FERRY_NODE_GRACE:-20s}"
FERRY_EVICTION_TOLERATION_SECONDS="${FERRY_EVICTION_TOLERATION_SECONDS:-30}"

# --- paths -------------------------------------------------------------------
# Per-checkout state (git-ignored): PKI, kubeconfigs, logs, pids, etcd data.
STATE_DIR="$FERRY_ROOT/.cache/cluster"
PKI_DIR="$STATE_DIR/pki"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
# Node state that must live on the host's real filesystem (ext4): overlayfs
# cannot use Docker's fuse-overlayfs root as its upper/lower layers.
NODES_STATE_DIR="$FERRY_CACHE/cluster/nodes"
# Cached images inputs and outputs (debootstrap rootfs, image tarballs).
IMAGE_CACHE="$FERRY_CACHE/cluster/images"
# The shared snapshot storage: same path on the host and in every node.
FERRY_SHARED_DIR="${FERRY_SHARED_DIR:-/var/lib/ferry-shared}"
# Where the Ferry agent installs ferry-runc on each node (a hostPath); the
# node's containerd already registers the `ferry` runtime handler there.
FERRY_NODE_BIN_DIR=/opt/ferry/bin

# Image names (local only: nothing is ever pulled).
PAUSE_IMAGE="ferry.local/pause:3.10"
WORKLOAD_IMAGE="ferry.local/statekeeper:dev"

node_names() {
  local i
  for ((i = 1; i <= FERRY_NODE_COUNT; i++)); do echo "${FERRY_NODE_PREFIX}$i"; done
}
node_ip() { # node_ip NAME
  local n="${1##*-}"
  echo "${FERRY_NODE_IP_PREFIX}$((10 + n))"
}
is_node_name() { [[ $'\n'"$(node_names)"$'\n' == *$'\n'"$1"$'\n'* ]]; }

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds or
# the deadline passes (no fixed sleeps anywhere else).
wait_for() {
  local secs="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

container_state() { # running | paused | exited | created | absent
  local s
  s="$(docker inspect -f '{{.State.Status}}' "$1" 2>/dev/null)" || s=absent
  echo "${s:-absent}"
}

# pid_alive PIDFILE BINARY: the process in PIDFILE is alive and really is
# BINARY (so a recycled pid is never mistaken for ours).
pid_alive() {
  local pf="$1" bin="$2" pid
  [[ -f "$pf" ]] || return 1
  pid="$(cat "$pf")"
  [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 1
  local argv0
  IFS= read -r -d '' argv0 </proc/"$pid"/cmdline || true
  [[ "$argv0" == *"/$bin" ]]
}
