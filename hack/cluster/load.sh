#!/usr/bin/env bash
# `make cluster-load IMAGES="a:tag b:tag"`: copies local Docker images into
# the containerd (namespace k8s.io, the one kubelet uses) of every running
# node, so pods can use them with imagePullPolicy Never/IfNotPresent: no
# registry exists here. An image already loaded into a node with the same
# Docker image ID is skipped.
#
# Usage: load.sh IMAGE...   (or IMAGES="..." in the environment)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

images=("$@")
((${#images[@]})) || read -r -a images <<<"${IMAGES:-}"
((${#images[@]})) || die "usage: load.sh IMAGE... (or IMAGES=\"a:tag b:tag\")"

declare -A ids=()
for img in "${images[@]}"; do
  ids[$img]="$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" || die "no local Docker image $img"
done

nodes=()
for n in $(node_names); do
  [[ "$(container_state "$n")" == running ]] && nodes+=("$n")
done
((${#nodes[@]})) || die "no running node: run make cluster-up first"

# load_into NODE: every image that NODE does not have yet.
load_into() {
  local n="$1" img record="$NODES_STATE_DIR/$1/loaded-images"
  touch "$record"
  for img in "${images[@]}"; do
    if grep -qxF "$img ${ids[$img]}" "$record" &&
      [[ -n "$(docker exec "$n" ctr -n k8s.io images ls -q "name==$(normalize "$img")" 2>/dev/null)" ]]; then
      continue
    fi
    # (ctr's stderr only carries containerd's cgroup v1 deprecation notice
    # unless the import fails.)
    local err
    if ! err="$(docker save "$img" | docker exec -i "$n" ctr -n k8s.io images import - 2>&1 >/dev/null)"; then
      log "load: $img into $n failed: $err"
      return 1
    fi
    grep -v "^$img " "$record" >"$record.tmp" || true
    echo "$img ${ids[$img]}" >>"$record.tmp"
    mv "$record.tmp" "$record"
    log "load: $img -> $n"
  done
}

# normalize IMAGE: the reference containerd stores (docker.io/library/...
# for short names), as kubelet asks for it.
normalize() {
  local r="$1" first="${1%%/*}"
  if [[ "$r" != */* ]]; then
    r="docker.io/library/$r"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    r="docker.io/$r"
  fi
  [[ "${r##*/}" == *:* || "$r" == *@* ]] || r="$r:latest"
  echo "$r"
}

pids=()
for n in "${nodes[@]}"; do
  load_into "$n" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
