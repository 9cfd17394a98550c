#!/usr/bin/env bash
# Runs the local cluster's control plane as plain host processes: etcd on
# loopback, kube-apiserver on the cluster network's gateway address (the one
# address both the host and the node containers reach), and
# kube-controller-manager + kube-scheduler talking to it. Each process is
# started detached (setsid, all fds redirected so make/ctest never wait on
# it), its pid kept in .cache/cluster/run/ and its log in .cache/cluster/logs/.
#
# Usage: controlplane.sh start | stop | status
#   start   idempotent: starts what is not running, waits for readyz
#   stop    stops only the processes whose pidfiles it wrote
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

args_etcd() {
  local url="http://127.0.0.1"
  echo --name=ferry --data-dir="$STATE_DIR/etcd" \
    --listen-client-urls="$url:$FERRY_ETCD_CLIENT_PORT" --advertise-client-urls="$url:$FERRY_ETCD_CLIENT_PORT" \
    --listen-peer-urls="$url:$FERRY_ETCD_PEER_PORT" --initial-advertise-peer-urls="$url:$FERRY_ETCD_PEER_PORT" \
    --initial-cluster="ferry=$url:$FERRY_ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
}

# kube-apiserver notes:
# --kubelet-preferred-address-types=InternalIP: node hostnames do not resolve
#   on the host (and must never be looked up in its DNS).
# --enable-aggregator-routing: webhooks and aggregated APIs are called on
#   their endpoints' pod IPs (routed from the host to the nodes), not on
#   ClusterIPs, which only kube-proxy inside the nodes translates.
# --default-*-toleration-seconds: pods leave a NotReady/unreachable node
#   after 30s instead of 5 minutes.
args_kube-apiserver() {
  local p="$PKI_DIR"
  echo --etcd-servers="http://127.0.0.1:$FERRY_ETCD_CLIENT_PORT" \
    --bind-address="$FERRY_GATEWAY_IP" --advertise-address="$FERRY_GATEWAY_IP" \
    --secure-port="$FERRY_APISERVER_PORT" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$FERRY_SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --enable-aggregator-routing=true \
    --default-not-ready-toleration-seconds="$FERRY_EVICTION_TOLERATION_SECONDS" \
    --default-unreachable-toleration-seconds="$FERRY_EVICTION_TOLERATION_SECONDS" \
    --profiling=false --v=1
}

args_kube-controller-manager() {
  local p="$PKI_DIR" kc="$PKI_DIR/controller-manager.kubeconfig"
  echo --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$FERRY_KCM_PORT" \
    --allocate-node-cidrs=true --cluster-cidr="$FERRY_POD_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$FERRY_SERVICE_CIDR" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --root-ca-file="$p/ca.crt" --service-account-private-key-file="$p/sa.key" \
    --use-service-account-credentials=true \
    --node-monitor-grace-period="$FERRY_NODE_GRACE" --node-monitor-period=2s \
    --leader-elect=false --profiling=false --v=1
}

args_kube-scheduler() {
  local kc="$PKI_DIR/scheduler.kubeconfig"
  echo --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$FERRY_SCHED_PORT" \
    --leader-elect=false --profiling=false --v=1
}

start_one() {
  local c="$1" bin
  local pf="$RUN_DIR/$c.pid"
  if pid_alive "$pf" "$c"; then return; fi
  bin="$(command -v "$c")" || die "$c not found in $FERRY_REPO_BIN (run make setup)"
  bin="$(readlink -f "$bin")"
  [[ -f "$LOG_DIR/$c.log" ]] && mv "$LOG_DIR/$c.log" "$LOG_DIR/$c.log.prev"
  # shellcheck disable=SC2046 # the args are flags without spaces
  setsid "$bin" $("args_$c") </dev/null >"$LOG_DIR/$c.log" 2>&1 &
  echo $! >"$pf"
  log "control plane: started $c (pid $!)"
}

apiserver_ready() { kc get --raw /readyz; }
etcd_ready() { etcdctl --endpoints="http://127.0.0.1:$FERRY_ETCD_CLIENT_PORT" endpoint health; }

start() {
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/etcd"
  [[ "$(ip -br addr show)" == *" $FERRY_GATEWAY_IP/"* ]] ||
    die "gateway address $FERRY_GATEWAY_IP is not on this host: create the $FERRY_NETWORK network first"
  start_one etcd
  wait_for 30 "etcd health" etcd_ready || { tail -20 "$LOG_DIR/etcd.log" >&2; die "etcd did not start"; }
  start_one kube-apiserver
  wait_for 60 "kube-apiserver readyz" apiserver_ready || {
    tail -20 "$LOG_DIR/kube-apiserver.log" >&2
    die "kube-apiserver did not become ready"
  }
  start_one kube-controller-manager
  start_one kube-scheduler
}

stop() {
  local c pf pid i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[$i]}"
    pf="$RUN_DIR/$c.pid"
    if pid_alive "$pf" "$c"; then
      pid="$(cat "$pf")"
      # A graceful stop first; kube-apiserver may take longer than a test
      # cluster deserves (it drains requests), so SIGKILL after 10s.
      kill -TERM "$pid" 2>/dev/null || true
      if ! wait_for 10 "$c to exit" test ! -d "/proc/$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 "$c to die" test ! -d "/proc/$pid" || true
      fi
      log "control plane: stopped $c (pid $pid)"
    fi
    rm -f "$pf"
  done
}

status() {
  local c rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$RUN_DIR/$c.pid" "$c"; then
      echo "$c running (pid $(cat "$RUN_DIR/$c.pid"))"
    else
      echo "$c stopped"
      rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
