#!/usr/bin/env bash
# Builds, offline and without any registry, the three images the local
# cluster needs, each only when its inputs changed:
#   ferry-node:<key>             the node: a debootstrap'd Debian bookworm
#                                rootfs (same release as the host, so the
#                                host-built CRIU and runc run unchanged) plus
#                                the pinned containerd, runc, CRIU, CNI
#                                plugins, kubelet and kube-proxy
#   ferry.local/pause:3.10       the pod sandbox (static pause binary)
#   ferry.local/statekeeper:dev  the stateful test workload + busybox
# The debootstrap rootfs (the slow part) is cached as a tarball under
# ~/.cache/ferry/cluster/images, keyed by its package list; the images are
# keyed by the content of their inputs (label ferry.input).
#
# Usage: image.sh [node|pause|workload]...   (default: all). Prints nothing
# on stdout except, for `node`, the node image's tag.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the node runs besides the pinned binaries: the runtime libraries of
# CRIU (built on the host against these same bookworm packages) and runc,
# the netfilter tools kube-proxy and CRIU's network lock use, and a few
# debugging tools. busybox-static also provides the test workload's shell.
NODE_PACKAGES=(
  libprotobuf-c1 libnl-3-200 libnl-route-3-200 libnet1 libbsd0 libgnutls30
  libnftables1 libnftnl11 libmnl0 libxtables12 libjansson4 libuuid1 libseccomp2
  iptables nftables conntrack iproute2 iputils-ping ethtool socat kmod procps
  psmisc busybox-static jq
)
mkdir -p "$IMAGE_CACHE"

# drop_replaced ID: after re-tagging, remove the image the tag used to name
# (ID), unless something still uses it.
drop_replaced() {
  [[ -n "$1" ]] && docker rmi "$1" >/dev/null 2>&1 || true
}

input_label() { docker image inspect -f '{{index .Config.Labels "ferry.input"}}' "$1" 2>/dev/null || true; }

# hash_files FILE...: content hash of small files, identity (size+mtime) of
# big binaries, so a warm check costs milliseconds.
hash_inputs() {
  local f
  for f in "$@"; do
    f="$(readlink -f "$f")"
    [[ -f "$f" ]] || die "missing input $f (run make setup)"
    if (($(stat -c %s "$f") > 1048576)); then
      stat -c '%n %s %Y' "$f"
    else
      sha256sum "$f"
    fi
  done | sha256sum | cut -c1-16
}

# unmount_below DIR: whatever an interrupted debootstrap left mounted there.
unmount_below() {
  local m
  for m in $(findmnt -rn -o TARGET | grep "^$1/" | sort -r || true); do umount -l "$m"; done
}

base_key() {
  printf '%s\n' "$DEBIAN_SUITE" minbase "${NODE_PACKAGES[@]}" recipe-2 | sha256sum | cut -c1-16
}

# The debootstrap'd rootfs tarball (minutes cold, cached by package list).
build_base() {
  local key tar tmp
  key="$(base_key)"
  tar="$IMAGE_CACHE/node-base-$key.tar"
  if [[ -f "$tar" ]]; then
    echo "$tar"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap missing (make setup installs it)"
  log "node image: debootstrap $DEBIAN_SUITE rootfs (cold: a few minutes)"
  tmp="$(mktemp -d "$IMAGE_CACHE/rootfs.XXXXXX")"
  # debootstrap mounts /proc and /sys in the target; never leave them behind.
  # shellcheck disable=SC2064 # expand $tmp now
  trap "unmount_below '$tmp'; rm -rf '$tmp'" EXIT
  local joined
  joined="$(IFS=,; echo "${NODE_PACKAGES[*]}")"
  if ! debootstrap --variant=minbase --include="$joined" "$DEBIAN_SUITE" "$tmp/rootfs" "$DEBIAN_MIRROR" \
    >"$tmp/debootstrap.log" 2>&1; then
    tail -30 "$tmp/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  (cd "$tmp/rootfs" && rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* \
    var/cache/apt/archives/*.deb var/lib/apt/lists/* var/log/*.log)
  tar -C "$tmp/rootfs" --numeric-owner -cf "$tar.part" .
  mv "$tar.part" "$tar"
  # Older bases are dead weight once a new package list is in use.
  find "$IMAGE_CACHE" -maxdepth 1 -name 'node-base-*.tar' ! -name "node-base-$key.tar" -delete
  rm -rf "$tmp"
  trap - EXIT
  log "node image: base rootfs cached as ${tar/#$HOME/\~}"
  echo "$tar"
}

# Pinned binaries that go into the node image (source -> path in the node).
node_files() {
  local k="$FERRY_TOOLS/kubernetes-$KUBERNETES_VERSION/bin" c="$FERRY_TOOLS/containerd-$CONTAINERD_VERSION/bin"
  local cni="$FERRY_TOOLS/cni-plugins-$CNI_PLUGINS_VERSION/bin" criu
  criu="$(readlink -f "$FERRY_CACHE/criu")"
  cat <<EOF
$c/containerd usr/local/bin/containerd
$c/containerd-shim-runc-v2 usr/local/bin/containerd-shim-runc-v2
$c/ctr usr/local/bin/ctr
$FERRY_TOOLS/runc-$RUNC_VERSION/bin/runc usr/local/sbin/runc
$criu/sbin/criu usr/local/sbin/criu
$criu/libexec/criu/scripts/systemd-autofs-restart.sh usr/local/libexec/criu/scripts/systemd-autofs-restart.sh
$k/kubelet usr/local/bin/kubelet
$k/kube-proxy usr/local/bin/kube-proxy
$k/kubectl usr/local/bin/kubectl
$cni/bridge opt/cni/bin/bridge
$cni/host-local opt/cni/bin/host-local
$cni/loopback opt/cni/bin/loopback
$cni/portmap opt/cni/bin/portmap
$cni/ptp opt/cni/bin/ptp
$here/node/entrypoint.sh usr/local/bin/ferry-node-entrypoint
$here/node/containerd.toml etc/containerd/config.toml
$here/node/kubelet.yaml etc/ferry/kubelet.yaml
$here/node/cni.conflist.tmpl etc/ferry/cni.conflist.tmpl
$here/node/resolv.conf etc/ferry/resolv.conf
EOF
}

build_node() {
  local base key tag tmp src dst
  base="$(build_base)"
  local -a sources
  mapfile -t sources < <(node_files | awk '{print $1}')
  key="$( (basename "$base"; node_files | awk '{print $2}'; hash_inputs "${sources[@]}") | sha256sum | cut -c1-16)"
  tag="ferry-node:$key"
  if [[ "$(input_label "$tag")" == "$key" ]]; then
    echo "$tag"
    return
  fi
  log "node image: assembling $tag"
  tmp="$(mktemp -d "$IMAGE_CACHE/node.XXXXXX")"
  trap 'rm -rf "'"$tmp"'"' EXIT
  # Docker's import rejects a tar with duplicate paths, so the image is one
  # fresh tar of the base rootfs with the pinned files installed into it.
  mkdir "$tmp/rootfs"
  tar -C "$tmp/rootfs" --numeric-owner -xf "$base"
  while read -r src dst; do
    install -D -m "$( [[ -x "$src" ]] && echo 755 || echo 644)" "$src" "$tmp/rootfs/$dst"
  done < <(node_files)
  mkdir -p "$tmp/rootfs/var/lib/ferry-shared" "$tmp/rootfs/opt/ferry/bin"
  tar -C "$tmp/rootfs" --numeric-owner -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/ferry-node-entrypoint"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL ferry.input=$key" \
    - "$tag" >/dev/null
  rm -rf "$tmp"
  trap - EXIT
  # Drop node images of older inputs that no container uses any more.
  local old
  for old in $(docker images ferry-node --format '{{.Repository}}:{{.Tag}}' | grep -vx "$tag"); do
    docker rmi "$old" >/dev/null 2>&1 || true
  done
  log "node image: $tag built"
  echo "$tag"
}

build_pause() {
  local key
  key="$(hash_inputs "$here/node/pause.c")"
  [[ "$(input_label "$PAUSE_IMAGE")" == "$key" ]] && return
  log "pause image: building $PAUSE_IMAGE"
  local tmp old
  old="$(docker image inspect -f '{{.Id}}' "$PAUSE_IMAGE" 2>/dev/null || true)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "'"$tmp"'"' EXIT
  mkdir -p "$tmp/root"
  gcc -static -Os -Wall -Werror -o "$tmp/root/pause" "$here/node/pause.c"
  strip "$tmp/root/pause"
  tar -C "$tmp/root" --numeric-owner --owner=0 --group=0 -cf "$tmp/pause.tar" .
  docker import --change 'ENTRYPOINT ["/pause"]' --change "LABEL ferry.input=$key" \
    "$tmp/pause.tar" "$PAUSE_IMAGE" >/dev/null
  drop_replaced "$old"
  rm -rf "$tmp"
  trap - EXIT
}

build_workload() {
  local statekeeper="${STATEKEEPER:-$FERRY_ROOT/build/tests/workloads/statekeeper}"
  [[ -x "$statekeeper" ]] || die "$statekeeper missing: build the statekeeper target (cmake --build build --target statekeeper)"
  local base key
  base="$(build_base)"
  key="$(hash_inputs "$statekeeper"; basename "$base")"
  key="$(echo "$key" | sha256sum | cut -c1-16)"
  [[ "$(input_label "$WORKLOAD_IMAGE")" == "$key" ]] && return
  log "workload image: building $WORKLOAD_IMAGE"
  local tmp a old
  old="$(docker image inspect -f '{{.Id}}' "$WORKLOAD_IMAGE" 2>/dev/null || true)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "'"$tmp"'"' EXIT
  mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/data"
  chmod 1777 "$tmp/root/tmp"
  # bookworm is merged-/usr: busybox-static's /bin/busybox is ./usr/bin/busybox.
  tar -C "$tmp" -xf "$base" ./usr/bin/busybox || die "busybox not found in the node base rootfs"
  install -m 755 "$tmp/usr/bin/busybox" "$tmp/root/bin/busybox"
  for a in sh ash cat echo ls ps sleep nc wget grep head tail wc kill date hostname ip ifconfig id env true false; do
    ln -s busybox "$tmp/root/bin/$a"
  done
  install -m 755 "$statekeeper" "$tmp/root/statekeeper"
  tar -C "$tmp/root" --numeric-owner --owner=0 --group=0 -cf "$tmp/workload.tar" .
  docker import --change 'ENTRYPOINT ["/statekeeper"]' --change 'CMD ["--port", "7000"]' \
    --change 'ENV PATH=/bin' --change "LABEL ferry.input=$key" \
    "$tmp/workload.tar" "$WORKLOAD_IMAGE" >/dev/null
  drop_replaced "$old"
  rm -rf "$tmp"
  trap - EXIT
}

what=("$@")
((${#what[@]})) || what=(node pause workload)
for w in "${what[@]}"; do
  case "$w" in
  node) build_node ;;
  pause) build_pause ;;
  workload) build_workload ;;
  base) build_base ;;
  *) die "unknown image $w" ;;
  esac
done
