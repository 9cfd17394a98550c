#!/usr/bin/env bash
# The one setup entry point: installs and builds everything Ferry's build and
# tests need, pinned by hack/versions.env and cached under ~/.cache/ferry.
# Idempotent: on a warm machine it only checks stamps (seconds). Every pinned
# binary is linked into .cache/bin/ (git-ignored):
#   export PATH=$PWD/.cache/bin:$PATH
# and the pinned BLAKE3 library's prefix into .cache/blake3 (CMake finds it there).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

start=$SECONDS
[[ $EUID -eq 0 ]] || die "setup installs Debian packages and runs CRIU: run it as root"
"$here/toolchain/apt.sh"
"$here/toolchain/criu.sh"
"$here/toolchain/blake3.sh"
"$here/toolchain/go-tools.sh"
"$here/toolchain/criu-features.sh"
log "setup: done in $((SECONDS - start))s; pinned tools are in $FERRY_REPO_BIN"
