#!/usr/bin/env bash
# Builds Ferry's images (hack/images/build.sh: the Dockerfile, offline, on
# the debootstrapped base) and loads them into every node, once, before the
# tests that install Ferry. Its own step with its own time limit: on a
# fresh machine the base image and the in-image C++ build take 10-12
# minutes on 2 cores, which is not a Helm round trip's time to spend. The
# later tests call build.sh again and get Docker's cache.
source "$(dirname "$0")/lib.sh"

check "Ferry's images are built and in every node"
start=$SECONDS
mapfile -t images < <("$FERRY_ROOT/hack/images/build.sh")
((${#images[@]} == 2)) || fail "hack/images/build.sh printed ${#images[@]} images, expected 2: ${images[*]}"
"$FERRY_ROOT/hack/cluster/load.sh" "${images[@]}" >/dev/null
for n in $(node_names); do
  for img in "${images[@]}"; do
    [[ -n "$(docker exec "$n" ctr -n k8s.io images ls -q "name==docker.io/library/$img" 2>/dev/null)" ]] ||
      fail "$img is not in node $n after load.sh"
  done
done
ok "images ${images[*]} built and loaded into $(node_names | wc -w) nodes in $((SECONDS - start)) s"
