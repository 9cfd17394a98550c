#!/usr/bin/env bash
# Builds the pinned CRIU from Debian's upstream source tarball into a
# project-owned prefix ($FERRY_TOOLS/criu-<version>), never touching a system
# criu. Falls back to the trixie version plus our carried patches when the
# archive no longer serves the primary pin (sid drops superseded versions).
# Patches live in criu-patches/<version>/ and each starts with its reason.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

pool="http://deb.debian.org/debian/pool/main/c/criu"

patch_key() { cat "$here/criu-patches/$1/"*.patch 2>/dev/null | sha256sum | cut -c1-16; }

build_criu() {
  local v="$1" sum="$2" dir="$FERRY_TOOLS/criu-$1"
  local key="$v-$sum-$(patch_key "$v")"
  if stamp_ok "$dir" "$key"; then echo "$dir"; return 0; fi
  fetch_verified "$pool/criu_${v}.orig.tar.xz" "criu_${v}.orig.tar.xz" "$sum" || return 1
  log "criu $v: building (cold: ~3 min on 2 cores)"
  local src
  src="$(mktemp -d "$FERRY_CACHE/criu-src.XXXXXX")"
  # build_criu runs in a $(...) subshell: EXIT also covers die().
  trap "rm -rf '$src'" EXIT
  tar -xJf "$FERRY_DOWNLOADS/criu_${v}.orig.tar.xz" -C "$src" --strip-components=1
  local p
  for p in "$here/criu-patches/$v/"*.patch; do
    [[ -e "$p" ]] || continue
    log "criu $v: applying $(basename "$p")"
    patch -d "$src" -p1 --quiet <"$p"
  done
  rm -rf "$dir"
  # Docs need asciidoc/xmlto and pycriu needs pip: we ship the binary only
  # (runc drives it over its RPC socket; the agent runs it as a command).
  make -C "$src" -j"$(nproc)" criu >"$src/build.log" 2>&1 ||
    { tail -40 "$src/build.log" >&2; die "criu $v: build failed"; }
  make -C "$src" PREFIX="$dir" install-criu >>"$src/build.log" 2>&1 ||
    { tail -40 "$src/build.log" >&2; die "criu $v: install failed"; }
  stamp_write "$dir" "$key"
  echo "$dir"
}

# FERRY_CRIU_FALLBACK=1 only builds the fallback pin and prints its prefix,
# linking nothing, so it can be tested beside the primary pin.
if [[ "${FERRY_CRIU_FALLBACK:-}" == 1 ]]; then
  build_criu "$CRIU_FALLBACK_VERSION" "$CRIU_FALLBACK_SHA256"
  exit 0
fi
dir="$(build_criu "$CRIU_VERSION" "$CRIU_SHA256")" || {
  log "criu $CRIU_VERSION not served any more; using fallback $CRIU_FALLBACK_VERSION with carried patches"
  dir="$(build_criu "$CRIU_FALLBACK_VERSION" "$CRIU_FALLBACK_SHA256")"
}
link_bin "$dir/sbin/criu"
ln -sfn "$dir" "$FERRY_CACHE/criu"
log "criu: $("$dir/sbin/criu" --version | head -1)"
