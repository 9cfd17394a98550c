#!/usr/bin/env bash
# Reports which CRIU features this kernel offers, so that the modes that
# depend on them (PreCopy needs soft-dirty tracking, PostCopy needs
# userfaultfd) are known before anything tries them. Writes the report to
# .cache/criu-features.txt and prints it. `criu check` must pass; missing
# optional features are reported, not fatal.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

criu="$FERRY_REPO_BIN/criu"
out="$FERRY_ROOT/.cache/criu-features.txt"
"$criu" check >/dev/null 2>&1 || { "$criu" check; die "criu check failed on this kernel"; }
{
  echo "kernel $(uname -r), criu $("$criu" --version | awk '/Version/{print $2}')"
  for f in mem_dirty_track uffd uffd-noncoop pidfd_store network_lock_nftables \
    tcp_half_closed ns_pid timens; do
    if "$criu" check --feature "$f" >/dev/null 2>&1; then s=yes; else s=no; fi
    printf '  %-22s %s\n' "$f" "$s"
  done
  # An option of our patched CRIU (criu-patches/4.2.1/0002-*), not a kernel feature.
  if "$criu" --help 2>/dev/null | grep -q -- --lazy-dump-mode; then s=yes; else s=no; fi
  printf '  %-22s %s\n' "lazy-dump-mode read" "$s"
  # PostCopy's pages travel only over TLS: CRIU must link GnuTLS.
  if ldd "$criu" 2>/dev/null | grep -q libgnutls; then s=yes; else s="no (PostCopy refused)"; fi
  printf '  %-22s %s\n' "tls (GnuTLS)" "$s"
  echo "  fs.pipe-max-size       $(cat /proc/sys/fs/pipe-max-size)"
  if grep -q 'CapEff' /proc/self/status && (( ($(awk '/CapEff/{print "0x"$2}' /proc/self/status) >> 24) & 1 )); then
    echo "  CAP_SYS_RESOURCE       yes"
  else
    echo "  CAP_SYS_RESOURCE       no (pipes cannot grow past fs.pipe-max-size; RLIMIT_NOFILE cannot be raised)"
  fi
} >"$out"
log "criu features (also in ${out#"$FERRY_ROOT"/}):"
cat "$out" >&2
