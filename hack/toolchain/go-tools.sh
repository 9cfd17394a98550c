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

build_etcd() {
  local v="$ETCD_VERSION" dir="$FERRY_TOOLS/etcd-$ETCD_VERSION"
  if ! stamp_ok "$dir" "$v"; then
    log "etcd $v: building"
    new_module "$dir"
    cd "$dir"
    quiet go get "go.etcd.io/etcd/server/v3@$v" "go.etcd.io/etcd/etcdctl/v3@$v"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=pinned" \
      -o bin/etcd go.etcd.io/etcd/server/v3
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3
    stamp_write "$dir" "$v"
  fi
  link_bin "$dir"/bin/*
  log "etcd $v: ok"
}

build_containerd() {
  local v="$CONTAINERD_VERSION" dir="$FERRY_TOOLS/containerd-$CONTAINERD_VERSION"
  if ! stamp_ok "$dir" "$v"; then
    log "containerd $v: building"
    new_module "$dir"
    cd "$dir"
    quiet go get "github.com/containerd/containerd/v2@$v"
    local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$v -X github.com/containerd/containerd/v2/version.Revision=pinned"
    CGO_ENABLED=0 go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" -ldflags "$ld" -o bin/ \
      github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      github.com/containerd/containerd/v2/cmd/ctr
    stamp_write "$dir" "$v"
  fi
  link_bin "$dir"/bin/*
  log "containerd $v: ok"
}

build_runc() {
  local v="$RUNC_VERSION" dir="$FERRY_TOOLS/runc-$RUNC_VERSION"
  if ! stamp_ok "$dir" "$v"; then
    log "runc $v: building (with seccomp)"
    new_module "$dir"
    cd "$dir"
    quiet go get "github.com/opencontainers/runc@$v"
    CGO_ENABLED=1 go build -trimpath -tags "seccomp urfave_cli_no_docs" \
      -ldflags "-s -w -X main.version=${v#v} -X main.gitCommit=pinned" -o bin/runc github.com/opencontainers/runc
    stamp_write "$dir" "$v"
  fi
  link_bin "$dir"/bin/runc
  log "runc $v: ok"
}

build_cni() {
  local v="$CNI_PLUGINS_VERSION" dir="$FERRY_TOOLS/cni-plugins-$CNI_PLUGINS_VERSION"
  if ! stamp_ok "$dir" "$v"; then
    log "cni plugins $v: building"
    new_module "$dir"
    cd "$dir"
    quiet go get "github.com/containernetworking/plugins@$v"
    local p
    for p in main/bridge main/loopback main/ptp ipam/host-local meta/portmap; do
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "bin/$(basename $p)" \
        "github.com/containernetworking/plugins/plugins/$p"
    done
    stamp_write "$dir" "$v"
  fi
  # CNI plugins are not linked into .cache/bin: they live in the node image.
  log "cni plugins $v: ok"
}

build_helm() {
  local v="$HELM_VERSION" dir="$FERRY_TOOLS/helm-$HELM_VERSION"
  if ! stamp_ok "$dir" "$v"; then
    log "helm $v: building"
    new_module "$dir"
    cd "$dir"
    quiet go get "helm.sh/helm/v3@$v"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v" \
      -o bin/helm helm.sh/helm/v3/cmd/helm
    stamp_write "$dir" "$v"
  fi
  link_bin "$dir"/bin/helm
  log "helm $v: ok"
}

tools=("$@")
((${#tools[@]})) || tools=(etcd runc containerd cni helm kubernetes)
for t in "${tools[@]}"; do
  case "$t" in
  kubernetes | etcd | containerd | runc | cni | helm) (set -e; "build_$t") ;;
  *) die "unknown tool $t" ;;
  esac
done
