#!/usr/bin/env bash
# The one setup entry point: installs and builds everything Ferry's build and
# tests need, pinned by hack/versions.env and cached under ~/.cache/ferry.
# Idempotent: on a warm machine it only checks stamps (seconds). Every pinned
# binary is linked into .cache/bin/ (git-ignored):
#   export PATH=$PWD/.cache/bin:$PATH
# and the pinned BLAKE3 library's prefix into .cache/blake3 (CMake finds it there).
#
# Usage: setup.sh [all|build|tools]
#   build  what compiling Ferry needs: the Debian packages and BLAKE3
#   tools  what running its tests needs: CRIU and the Go-built Kubernetes
#          tooling (most of a cold setup), then CRIU's feature report
# `make test` runs `build` first and `tools` beside the C++ builds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

phase="${1:-all}"
[[ "$phase" =~ ^(all|build|tools)$ ]] || die "usage: setup.sh [all|build|tools] (got \"$phase\")"
start=$SECONDS
[[ $EUID -eq 0 ]] || die "setup installs Debian packages and runs CRIU: run it as root"
if [[ "$phase" != tools ]]; then
  "$here/toolchain/apt.sh"
  "$here/toolchain/blake3.sh"
fi
if [[ "$phase" != build ]]; then
  "$here/toolchain/criu.sh"
  "$here/toolchain/go-tools.sh"
  "$here/toolchain/criu-features.sh"
fi
log "setup ($phase): done in $((SECONDS - start))s; pinned tools are in $FERRY_REPO_BIN"
