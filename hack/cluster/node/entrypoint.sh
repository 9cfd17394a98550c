#!/bin/bash
# Entrypoint of a Ferry test-cluster node container (docker-init is PID 1 and
# reaps orphans; this script is its only child). There is no systemd in the
# node: this script prepares the node's mount and kernel view, then runs
# containerd, kubelet and kube-proxy, each in a restart loop, with logs in
# /var/log/ferry (a host directory, so they survive a killed node).
#
# Node identity comes from /etc/ferry/node/node.env (NODE_NAME, NODE_IP),
# written by hack/cluster/up.sh together with the node's kubeconfigs.
set -euo pipefail
# shellcheck source=/dev/null
source /etc/ferry/node/node.env
logdir=/var/log/ferry
mkdir -p "$logdir"
exec >>"$logdir/entrypoint.log" 2>&1
echo "$(date -Is) node $NODE_NAME ($NODE_IP) starting"

# The container is not --privileged (see up.sh): /sys and the cgroup v1
# hierarchies come read-only. kubelet and runc create cgroups below this
# node's cgroup-namespace root, so make them writable (per-mount flag only).
mount -o remount,rw /sys
for d in /sys/fs/cgroup/*/; do
  mount -o remount,bind,rw "$d"
done

# Mounts made by kubelet (volumes) and by containerd (rootfs) must propagate
# to the runc containers created below them.
mount --make-rshared /

# kubelet insists on six kernel tunables (vm.overcommit_memory=1,
# kernel.panic=10, kernel.panic_on_oops=1, ...) and would write them if they
# differ. They are not namespaced: writing them here would change the HOST's
# kernel. Show kubelet the values it expects instead, on files bind-mounted
# over /proc/sys in this node's mount namespace only.
fake=/run/ferry-sysctl
mkdir -p "$fake"
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key="${kv%%=*}" val="${kv#*=}"
  if [[ "$(cat "/proc/sys/$key")" != "$val" ]]; then
    echo "$val" >"$fake/${key//\//.}"
    mount --bind "$fake/${key//\//.}" "/proc/sys/$key"
  fi
done

# Per-network-namespace settings (this node's netns only): pods route
# through the node, and bridged pod traffic must traverse iptables so that a
# pod can reach a Service backed by a pod on the same bridge.
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 || true
fi

mkdir -p /var/lib/containerd /var/lib/kubelet /run/containerd /etc/cni/net.d /opt/ferry/bin

# supervise NAME CMD...: run CMD forever, restarting it when it exits.
supervise() {
  local name="$1"
  shift
  (
    while true; do
      echo "$(date -Is) starting $name" >>"$logdir/$name.log"
      rc=0
      "$@" >>"$logdir/$name.log" 2>&1 || rc=$?
      echo "$(date -Is) $name exited ($rc)" >>"$logdir/$name.log"
      sleep 2
    done
  ) &
}

supervise containerd /usr/local/bin/containerd --config /etc/containerd/config.toml
for _ in $(seq 1 300); do
  ctr --address /run/containerd/containerd.sock version >/dev/null 2>&1 && break
  sleep 0.1
done
echo "$(date -Is) containerd is up"

supervise kubelet /usr/local/bin/kubelet \
  --config=/etc/ferry/kubelet.yaml \
  --kubeconfig=/etc/ferry/node/kubelet.kubeconfig \
  --hostname-override="$NODE_NAME" \
  --node-ip="$NODE_IP" \
  --v=1
supervise kube-proxy /usr/local/bin/kube-proxy --config=/etc/ferry/node/kube-proxy.yaml --v=1

trap 'echo "$(date -Is) stopping"; kill 0' TERM INT
wait
