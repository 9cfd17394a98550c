# Networking of the local cluster, shared by up.sh, down.sh and fault.sh:
# the private Docker network, the firewall exception that lets pod traffic
# cross it, and the routes to every node's pod CIDR (on the host and inside
# every node). Sourced, not run.
#
# Why an *internal* Docker network: nodes (and so pods) get no default route
# and Docker adds no NAT to the outside, so nothing in the cluster can send
# traffic off this machine. Docker's isolation rules for internal networks
# drop forwarded packets whose source or destination is outside the network's
# subnet, which would also drop pod-to-pod traffic bridged between nodes
# (pod IPs are not node IPs); one ACCEPT rule in DOCKER-USER for traffic that
# stays on the bridge (in and out of ferry0) restores exactly that.
# shellcheck shell=bash

FERRY_BRIDGE="${FERRY_BRIDGE:-ferry0}"
FERRY_FW_COMMENT="ferry-cluster: pod traffic between nodes"
ROUTES_FILE="$RUN_DIR/host-routes"

fw_rule() { # fw_rule -C|-I|-D
  iptables -w "$1" DOCKER-USER -i "$FERRY_BRIDGE" -o "$FERRY_BRIDGE" -m comment --comment "$FERRY_FW_COMMENT" -j ACCEPT
}

ensure_network() {
  if ! docker network inspect "$FERRY_NETWORK" >/dev/null 2>&1; then
    docker network create --driver bridge --internal \
      --subnet "$FERRY_NODE_SUBNET" --gateway "$FERRY_GATEWAY_IP" \
      -o com.docker.network.bridge.name="$FERRY_BRIDGE" \
      --label ferry.cluster=1 "$FERRY_NETWORK" >/dev/null
    log "network: created $FERRY_NETWORK ($FERRY_NODE_SUBNET, bridge $FERRY_BRIDGE, internal)"
  fi
  fw_rule -C 2>/dev/null || fw_rule -I
}

node_connected() { # node_connected NAME: attached to the cluster network
  [[ -n "$(docker inspect -f "{{with index .NetworkSettings.Networks \"$FERRY_NETWORK\"}}{{.IPAddress}}{{end}}" "$1" 2>/dev/null)" ]]
}

connect_node() {
  docker network connect --ip "$(node_ip "$1")" "$FERRY_NETWORK" "$1"
  sync_routes
}

disconnect_node() {
  docker network disconnect -f "$FERRY_NETWORK" "$1"
}

# sync_routes: host -> every pod CIDR via its node; every node -> the other
# nodes' pod CIDRs. The pod and Service ranges are otherwise unreachable on
# the host, so no packet for them can leave through the host's default route.
sync_routes() {
  local n m cidr
  declare -A cidrs=()
  for n in $(node_names); do
    cidr="$(kc get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)"
    [[ -n "$cidr" ]] && cidrs[$n]="$cidr"
  done
  mkdir -p "$RUN_DIR"
  touch "$ROUTES_FILE"
  for cidr in "unreachable $FERRY_POD_CIDR" "unreachable $FERRY_SERVICE_CIDR"; do
    # shellcheck disable=SC2086
    ip route replace $cidr
    grep -qxF "$cidr" "$ROUTES_FILE" || echo "$cidr" >>"$ROUTES_FILE"
  done
  # Drop routes to pod CIDRs that no node holds any more (a recreated node
  # may have been given a new one).
  local r want=" ${cidrs[*]} "
  for r in $(ip -o route show dev "$FERRY_BRIDGE" | awk '$2 == "via" {print $1}'); do
    [[ "$want" == *" $r "* ]] || ip route del "$r" dev "$FERRY_BRIDGE" 2>/dev/null || true
  done
  for n in "${!cidrs[@]}"; do
    ip route replace "${cidrs[$n]}" via "$(node_ip "$n")" dev "$FERRY_BRIDGE"
    grep -qxF "${cidrs[$n]}" "$ROUTES_FILE" || echo "${cidrs[$n]}" >>"$ROUTES_FILE"
  done
  for n in "${!cidrs[@]}"; do
    [[ "$(container_state "$n")" == running ]] && node_connected "$n" || continue
    for r in $(docker exec "$n" ip -o route show | awk '$2 == "via" && $1 != "default" {print $1}'); do
      [[ "$want" == *" $r "* ]] || docker exec "$n" ip route del "$r" || true
    done
    for m in "${!cidrs[@]}"; do
      [[ "$m" == "$n" ]] && continue
      docker exec "$n" ip route replace "${cidrs[$m]}" via "$(node_ip "$m")"
    done
  done
}

# remove_network: every route, firewall rule and the network itself.
remove_network() {
  local r
  if [[ -f "$ROUTES_FILE" ]]; then
    while read -r r; do
      # shellcheck disable=SC2086
      [[ -n "$r" ]] && ip route del $r 2>/dev/null || true
    done <"$ROUTES_FILE"
    rm -f "$ROUTES_FILE"
  fi
  # Also what an interrupted run may have added without recording it.
  ip route del unreachable "$FERRY_POD_CIDR" 2>/dev/null || true
  ip route del unreachable "$FERRY_SERVICE_CIDR" 2>/dev/null || true
  while fw_rule -C 2>/dev/null; do fw_rule -D 2>/dev/null; done
  if docker info >/dev/null 2>&1 && docker network inspect "$FERRY_NETWORK" >/dev/null 2>&1; then
    docker network rm "$FERRY_NETWORK" >/dev/null
    log "network: removed $FERRY_NETWORK"
  fi
}
