#!/usr/bin/env bash
# Builds the ferry-operator and ferry-agent images from the Dockerfile,
# offline, on the local base image (base.sh). The agent image carries the
# pinned CRIU, and the build stage links the pinned static BLAKE3 library
# (both built by make setup, staged into the build context because they live
# outside the repo). Prints the image tags.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

tag="${FERRY_IMAGE_TAG:-dev}"
base="$("$here/base.sh")"
ctx="$FERRY_ROOT/.cache/image-context"
rm -rf "$ctx" && mkdir -p "$ctx"
cp -a "$(readlink -f "$FERRY_CACHE/criu")" "$ctx/criu"
cp -a "$(readlink -f "$FERRY_CACHE/blake3")" "$ctx/blake3"
cp -L "$FERRY_REPO_BIN/runc" "$ctx/runc"
for target in operator agent; do
  log "image ferry-$target:$tag ..."
  # The legacy builder (BuildKit is not installed here) warns that it is
  # deprecated on every build; show its output only when the build fails.
  if ! out="$(DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" --target "$target" \
    -t "ferry-$target:$tag" "$FERRY_ROOT" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "docker build of ferry-$target failed"
  fi
  echo "ferry-$target:$tag"
done
