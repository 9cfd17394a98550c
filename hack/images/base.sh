#!/usr/bin/env bash
# Builds the Debian bookworm base image every Ferry image starts from,
# offline: no registry is reachable here, so the rootfs comes from
# debootstrap (Debian's archive) and becomes an image with `docker import`.
# Cached: rebuilt only when the tag is missing. Prints the tag.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

tag="ferry-base:bookworm"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap missing (run make setup)"
rootfs="$(mktemp -d "$FERRY_CACHE/base-rootfs.XXXXXX")"
cleanup() {
  for m in $(findmnt -rn -o TARGET | grep "^$rootfs/" | sort -r || true); do umount -l "$m"; done
  rm -rf "$rootfs"
}
trap cleanup EXIT
log "base image: debootstrap bookworm (minbase) ..."
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 ||
  { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
rm -f "$rootfs.log"
# Images are rebuilt, never upgraded in place: drop the package lists.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
log "base image: $tag"
echo "$tag"
