#!/usr/bin/env bash
# Every pinned tool on PATH (.cache/bin first) reports exactly its pin from
# hack/versions.env. Fails on the first mismatch, printing what it got.
set -euo pipefail
source "$(dirname "$0")/../../hack/versions.env"
fails=0
expect() { # expect NAME WANT COMMAND...
  local name="$1" want="$2"; shift 2
  local got
  got="$("$@" 2>&1 | head -8 | tr '\n' ' ')" || true
  if [[ "$got" == *"$want"* ]]; then
    printf 'ok    %-26s %s\n' "$name" "$want"
  else
    printf 'FAIL  %-26s want %q, got %q\n' "$name" "$want" "$got"
    fails=$((fails + 1))
  fi
}
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  expect "$c" "Kubernetes $KUBERNETES_VERSION" "$c" --version
done
expect kubectl "Client Version: $KUBERNETES_VERSION" kubectl version --client
expect etcd "etcd Version: ${ETCD_VERSION#v}" etcd --version
expect etcdctl "etcdctl version: ${ETCD_VERSION#v}" etcdctl version
expect containerd "$CONTAINERD_VERSION" containerd --version
expect ctr "$CONTAINERD_VERSION" ctr --version
expect containerd-shim-runc-v2 "$CONTAINERD_VERSION" containerd-shim-runc-v2 -v
expect runc "runc version ${RUNC_VERSION#v}" runc --version
expect "runc (seccomp)" "libseccomp: " runc --version
expect helm "$HELM_VERSION" helm version --short
expect criu "Version: $CRIU_VERSION" criu --version
# BLAKE3 is a static library, not a binary: check the header CMake builds against.
expect "libblake3 (.cache/blake3)" "BLAKE3_VERSION_STRING \"${BLAKE3_DEB_VERSION%-*}\"" \
  grep -h BLAKE3_VERSION_STRING "$(dirname "$0")/../../.cache/blake3/include/blake3.h"
((fails == 0)) || { echo "$fails tool(s) do not match hack/versions.env; run make setup"; exit 1; }
