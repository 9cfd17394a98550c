#!/usr/bin/env bash
# Faults on demand for the local cluster's nodes, for fault tests:
#   kill NODE        SIGKILL the node container (every process on the node dies
#                    at once, like a power cut); `make cluster-up` recreates it
#   pause NODE       freeze every process of the node (cgroup freezer): a hung node
#   unpause NODE     thaw it
#   disconnect NODE  cut the node off the cluster network (its processes keep
#                    running, the apiserver and other nodes become unreachable)
#   reconnect NODE   put it back with the same IP and restore its pod routes
# A killed or paused node's Node object goes NotReady after the controller-
# manager's grace period (FERRY_NODE_GRACE, 20s).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=network.sh
source "$here/network.sh"

usage() { die "usage: $0 kill|pause|unpause|disconnect|reconnect NODE   (nodes: $(node_names | tr '\n' ' '))"; }
(($# == 2)) || usage
action="$1" node="$2"
is_node_name "$node" || usage
state="$(container_state "$node")"
[[ "$state" != absent ]] || die "node $node does not exist (make cluster-up)"

case "$action" in
kill)
  [[ "$state" == running || "$state" == paused ]] || die "node $node is $state"
  docker kill "$node" >/dev/null
  ;;
pause)
  [[ "$state" == running ]] || die "node $node is $state"
  # The cgroup v1 freezer can give up while the node's processes fork
  # ("OCI runtime pause failed: unable to freeze"; runc thaws it again):
  # seen once in a full test run. A hung node is what is asked for: retry.
  for attempt in 1 2 3 4 5; do
    if err="$(docker pause "$node" 2>&1 >/dev/null)"; then break; fi
    [[ "$err" == *"unable to freeze"* && $attempt -lt 5 ]] || die "pause $node: $err"
    log "pause $node: the freezer gave up (attempt $attempt), again"
    sleep 0.5
  done
  ;;
unpause)
  [[ "$state" == paused ]] || die "node $node is $state, not paused"
  docker unpause "$node" >/dev/null
  ;;
disconnect)
  node_connected "$node" || die "node $node is already disconnected"
  disconnect_node "$node"
  ;;
reconnect)
  node_connected "$node" && die "node $node is connected"
  [[ "$state" == running ]] || die "node $node is $state: reconnect needs it running"
  connect_node "$node"
  ;;
*) usage ;;
esac
log "fault: $action $node"
