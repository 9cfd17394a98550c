# Shared shell helpers for hack/ scripts: logging, cache locations, and
# pin stamps so a tool is rebuilt only when its pin changes.
# shellcheck shell=bash

FERRY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$FERRY_ROOT/hack/versions.env"

# Everything built or downloaded lives under the user's cache directory and
# survives clean clones; the repo's .cache/bin only holds symlinks into it.
FERRY_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ferry"
FERRY_DOWNLOADS="$FERRY_CACHE/downloads"
FERRY_TOOLS="$FERRY_CACHE/tools"
FERRY_REPO_BIN="$FERRY_ROOT/.cache/bin"
mkdir -p "$FERRY_DOWNLOADS" "$FERRY_TOOLS" "$FERRY_REPO_BIN"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# stamp_ok DIR KEY: true when DIR was completely built for KEY.
stamp_ok() { [[ -f "$1/.ferry-stamp" && "$(cat "$1/.ferry-stamp")" == "$2" ]]; }
# stamp_write DIR KEY: mark DIR as completely built for KEY (last step of a build).
stamp_write() { printf '%s' "$2" >"$1/.ferry-stamp"; }

# link_bin PATH...: expose pinned binaries in the repo's .cache/bin.
link_bin() {
  local f
  for f in "$@"; do ln -sfn "$f" "$FERRY_REPO_BIN/$(basename "$f")"; done
}

# fetch_verified URL FILE SHA256: download once into the cache and check it.
fetch_verified() {
  local url="$1" out="$FERRY_DOWNLOADS/$2" sum="$3"
  if [[ ! -f "$out" ]] || ! echo "$sum  $out" | sha256sum -c --quiet - 2>/dev/null; then
    curl -fsSL --retry 3 -o "$out.part" "$url" || { rm -f "$out.part"; return 1; }
    echo "$sum  $out.part" | sha256sum -c --quiet - || { rm -f "$out.part"; die "checksum mismatch for $url"; }
    mv "$out.part" "$out"
  fi
}
