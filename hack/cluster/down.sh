#!/usr/bin/env bash
# `make cluster-down`: removes everything `make cluster-up` created: the node
# containers (and with them every process, mount, netns and cgroup inside
# them), the Docker network and its firewall rule, the host routes, the
# control-plane processes (by their pidfiles only), etcd's data, the nodes'
# state directories and the shared storage directory. Safe to run when
# nothing (or only part of the cluster) is up. Images and the PKI stay, so
# the next cluster-up is warm.
#
# FERRY_KEEP_SHARED=1 keeps the shared storage directory's contents.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=network.sh
source "$here/network.sh"

[[ $EUID -eq 0 ]] || die "cluster-down needs root"

# 1. control plane processes first (only those whose pidfiles we wrote):
# once the network is gone, the apiserver's address is no longer on this
# host and a client still running would send its requests out through the
# host's default route.
"$here/controlplane.sh" stop

# 2. nodes: every container of ours, by label and by name.
if docker info >/dev/null 2>&1; then
  containers="$( (docker ps -aq --filter label=ferry.cluster=1; for n in $(node_names); do docker ps -aq --filter "name=^${n}\$"; done) | sort -u)"
  if [[ -n "$containers" ]]; then
    # shellcheck disable=SC2086
    docker rm -f $containers >/dev/null
    log "nodes: removed $(echo "$containers" | wc -l) container(s)"
  fi
else
  log "docker is not running: no containers or network to remove"
fi

# 3. network, firewall rule, routes
remove_network

# 4. mounts: nothing of ours is mounted on the host (all bind mounts live in
# the node containers' mount namespaces), but an interrupted run could leave
# one; unmount anything below our directories, deepest first.
mounts="$(findmnt -rn -o TARGET | grep -E "^($NODES_STATE_DIR|$STATE_DIR|$FERRY_SHARED_DIR)(/|$)" | sort -r || true)"
for m in $mounts; do
  umount -l "$m" && log "mounts: unmounted $m"
done

# 5. state
rm -rf "$NODES_STATE_DIR" "$STATE_DIR/etcd" "$STATE_DIR/nodes" "$RUN_DIR"
# The kubeconfig goes too: it names the gateway address, which is not on
# this host any more, so a kubectl using it would send requests off the
# machine. Without it kubectl fails on loopback. (cluster-up rewrites it.)
rm -f "$KUBECONFIG_PATH"
if [[ "${FERRY_KEEP_SHARED:-0}" != 1 ]]; then rm -rf "$FERRY_SHARED_DIR"; fi
log "cluster down"
