#!/usr/bin/env bash
# Builds the pinned Kubernetes test tooling from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl, etcd/etcdctl, containerd (+ runc shim, ctr), runc (seccomp), the
# CNI plugins and helm. Each tool gets a throwaway Go module under the cache
# (never in the repo) and is rebuilt only when its pin changes.
#
# Usage: go-tools.sh [tool...]   (default: all)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
export GOFLAGS="-buildvcs=false -mod=mod"
export GOTOOLCHAIN=local
build_date="2026-01-01T00:00:00Z" # fixed: builds are reproducible per pin

# quiet CMD...: run CMD, showing its output only when it fails.
quiet() {
  local out
  out="$(mktemp)"
  if ! "$@" >"$out" 2>&1; then
    tail -30 "$out" >&2
    rm -f "$out"
    die "failed: $*"
  fi
  rm -f "$out"
}

# new_module DIR: start a throwaway module in DIR.
new_module() {
  rm -rf "$1" && mkdir -p "$1/bin"
  (cd "$1" && go mod init ferry.dev/toolchain/"$(basename "$1")" >/dev/null 2>&1)
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" dir="$FERRY_TOOLS/kubernetes-$KUBERNETES_VERSION"
  local key="$v"
  if ! stamp_ok "$dir" "$key"; then
    log "kubernetes $v: building (cold: ~15-25 min on 2 cores)"
    new_module "$dir"
    cd "$dir"
    go mod download -json "k8s.io/kubernetes@$v"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$v" | jq -r .GoMod)"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
    # them with ./staging paths, which do not apply to a dependent module.
    # Point each at the published tag instead (v1.X.Y -> v0.X.Y).
    local staging="v0.${v#v1.}"
    {
      echo "require k8s.io/kubernetes $v"
      grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" |
        awk -v s="$staging" '{print "replace " $1 " => " $1 " " s}'
    } >>go.mod
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    quiet go get "k8s.io/kubernetes@$v"
    local major minor
    major="$(echo "$v" | cut -d. -f1 | tr -d v)"
    minor="$(echo "$v" | cut -d. -f2)"
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o bin/ \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
    stamp_write "$dir" "$key"
  fi
  link_bin "$dir"/bin/*
  log "kubernetes $v: ok"
}

# ensure_tool NAME VERSION STEPS MODULE@VERSION...: when NAME's pin changed,
# builds it in a fresh throwaway module (go get MODULES, then the STEPS
# function, run inside the module with bin/ as output). Sets TOOL_DIR.
ensure_tool() {
  local name="$1" v="$2" steps="$3"
  shift 3
  TOOL_DIR="$FERRY_TOOLS/$name-$v"
  if ! stamp_ok "$TOOL_DIR" "$v"; then
    log "$name $v: building"
    new_module "$TOOL_DIR"
    (cd "$TOOL_DIR" && quiet go get "$@" && "$steps" "$v")
    stamp_write "$TOOL_DIR" "$v"
  fi
  log "$name $v: ok"
}

etcd_steps() {
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=pinned" \
    -o bin/etcd go.etcd.io/etcd/server/v3
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3
}
build_etcd() {
  ensure_tool etcd "$ETCD_VERSION" etcd_steps \
    "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
  link_bin "$TOOL_DIR"/bin/*
}

containerd_steps() {
  local pkg=github.com/containerd/containerd/v2
  CGO_ENABLED=0 go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -ldflags "-s -w -X $pkg/version.Version=$1 -X $pkg/version.Revision=pinned" -o bin/ \
    $pkg/cmd/containerd $pkg/cmd/containerd-shim-runc-v2 $pkg/cmd/ctr
}
build_containerd() {
  ensure_tool containerd "$CONTAINERD_VERSION" containerd_steps \
    "github.com/containerd/containerd/v2@$CONTAINERD_VERSION"
  link_bin "$TOOL_DIR"/bin/*
}

runc_steps() {
  CGO_ENABLED=1 go build -trimpath -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=${1#v} -X main.gitCommit=pinned" -o bin/runc \
    github.com/opencontainers/runc
}
build_runc() {
  ensure_tool runc "$RUNC_VERSION" runc_steps "github.com/opencontainers/runc@$RUNC_VERSION"
  link_bin "$TOOL_DIR"/bin/runc
}

cni_steps() {
  local p
  for p in main/bridge main/loopback main/ptp ipam/host-local meta/portmap; do
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "bin/$(basename $p)" \
      "github.com/containernetworking/plugins/plugins/$p"
  done
}
build_cni() {
  # Not linked into .cache/bin: the CNI plugins live in the node image.
  ensure_tool cni-plugins "$CNI_PLUGINS_VERSION" cni_steps \
    "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION"
}

helm_steps() {
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$1" \
    -o bin/helm helm.sh/helm/v3/cmd/helm
}
build_helm() {
  ensure_tool helm "$HELM_VERSION" helm_steps "helm.sh/helm/v3@$HELM_VERSION"
  link_bin "$TOOL_DIR"/bin/helm
}

tools=("$@")
((${#tools[@]})) || tools=(etcd runc containerd cni helm kubernetes)
for t in "${tools[@]}"; do
  case "$t" in
  kubernetes | etcd | containerd | runc | cni | helm) (set -e; "build_$t") ;;
  *) die "unknown tool $t" ;;
  esac
done
