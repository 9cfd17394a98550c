#!/bin/bash
# Runs INSIDE a node container (copied there by criu_in_nodes.sh): a plain
# runc container (no kubelet) running the statekeeper workload, in a network
# namespace of its own made here (like a pod sandbox's), checkpointed and
# restored with runc + the node's CRIU.
#
# Usage: in_node_runc.sh start|ask|checkpoint|restore|cleanup ID [ARG]
#   start ID              bundle + netns + `runc run -d`
#   ask ID REQUEST        one request/response on the workload's port
#   checkpoint ID DIR     `runc checkpoint --tcp-established` into DIR
#   restore ID DIR        bundle + netns (if missing) + `runc restore -d`
#   cleanup ID            kill/delete the container, bundle, netns
set -euo pipefail
cmd="$1" id="$2"
root=/run/ferry-e2e-runc
bundle="/var/lib/ferry-e2e/$id"
binary=/var/lib/ferry-e2e/statekeeper # copied in by the test
netns="$id"

prepare() {
  [[ -f "$bundle/config.json" ]] && return
  mkdir -p "$bundle/rootfs"
  # The rootfs is a tmpfs: the node's own root is fuse-overlayfs, which CRIU
  # would have to treat as an external mount.
  mountpoint -q "$bundle/rootfs" || mount -t tmpfs -o size=16m "ferry-e2e-$id" "$bundle/rootfs"
  install -m 755 "$binary" "$bundle/rootfs/statekeeper"
  install -d -m 1777 "$bundle/rootfs/tmp" # the workload keeps an open file there
  [[ -e "/var/run/netns/$netns" ]] || ip netns add "$netns"
  ip netns exec "$netns" ip link set lo up
  (cd "$bundle" && rm -f config.json && runc spec)
  jq --arg ns "/var/run/netns/$netns" '
    .process.terminal = false
    | .process.args = ["/statekeeper", "--port", "7000", "--mem-mib", "32", "--seed", "7"]
    | .root.readonly = false
    | (.linux.namespaces[] | select(.type == "network")).path = $ns' \
    "$bundle/config.json" >"$bundle/config.json.new"
  mv "$bundle/config.json.new" "$bundle/config.json"
}

case "$cmd" in
start)
  prepare
  # stdio is /dev/null: a file or pipe of the caller's would be an external
  # resource for CRIU (containerd's shim hands runc its FIFOs instead).
  runc --root "$root" run -d --bundle "$bundle" "$id" </dev/null >/dev/null 2>&1
  ;;
ask)
  # Bounded: after a dump, CRIU's network lock drops packets in the netns, so
  # a connect would otherwise wait for the kernel's SYN retries (~2 min).
  timeout "${ASK_TIMEOUT:-10}" ip netns exec "$netns" bash -c '
    exec 3<>/dev/tcp/127.0.0.1/7000 || exit 1
    printf "%s\n" "$1" >&3
    IFS= read -r -t 10 line <&3 || line="(no answer)"
    printf "%s\n" "$line"' _ "$3"
  ;;
checkpoint)
  mkdir -p "$3"
  runc --root "$root" checkpoint --tcp-established --image-path "$3" "$id" ||
    { tail -20 "$3/dump.log" >&2; exit 1; }
  # The container's writable state outside memory (the workload's open file
  # in /tmp) travels with the images, as Ferry's rootfs diff will.
  tar -C "$bundle/rootfs" -cf "$3/rootfs-diff.tar" tmp
  ;;
restore)
  prepare
  tar -C "$bundle/rootfs" -xf "$3/rootfs-diff.tar"
  runc --root "$root" restore -d --bundle "$bundle" --tcp-established --image-path "$3" "$id" </dev/null >/dev/null 2>"$3/restore.err" ||
    { cat "$3/restore.err" >&2; tail -20 "$3/restore.log" >&2; exit 1; }
  ;;
state)
  runc --root "$root" state "$id" 2>/dev/null | jq -r .status || echo absent
  ;;
cleanup)
  runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
  if mountpoint -q "$bundle/rootfs"; then umount "$bundle/rootfs"; fi
  rm -rf "$bundle"
  [[ -e "/var/run/netns/$netns" ]] && ip netns del "$netns"
  true
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
