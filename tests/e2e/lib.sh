# Helpers shared by the end-to-end tests on the local cluster: printing what
# is checked, failing with diagnostics, waiting on conditions with deadlines
# (never a fixed sleep), and a per-test namespace that is always cleaned up.
# The cluster's fixed interface (kubeconfig path, node names, fault helpers)
# comes from hack/cluster/lib.sh.
# shellcheck shell=bash
set -euo pipefail
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../hack/cluster/lib.sh
source "$E2E_DIR/../../hack/cluster/lib.sh"
# shellcheck source=../../hack/cluster/network.sh
source "$E2E_DIR/../../hack/cluster/network.sh"
export KUBECONFIG="$KUBECONFIG_PATH"

E2E_NAME="$(basename "$0" .sh)"
_cleanups=()

check() { printf '\n== check: %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*"
  # Diagnostics only while the cluster network exists: without it the
  # apiserver address is not local and kubectl must not be used at all.
  if [[ ! -e "/sys/class/net/$FERRY_BRIDGE" ]]; then exit 1; fi
  if [[ -n "${E2E_NS:-}" ]]; then
    echo "--- pods in $E2E_NS"
    kubectl get pods -n "$E2E_NS" -o wide 2>&1 || true
    echo "--- events in $E2E_NS"
    kubectl get events -n "$E2E_NS" --sort-by=.lastTimestamp 2>&1 | tail -20 || true
  fi
  echo "--- nodes"
  kubectl get nodes -o wide 2>&1 || true
  exit 1
}

# on_exit CMD: run CMD (a string) when the test exits, last registered first.
on_exit() { _cleanups=("$1" "${_cleanups[@]}"); }
_run_cleanups() {
  local rc=$? c
  for c in "${_cleanups[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  return $rc
}
trap _run_cleanups EXIT

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND (quietly) until it
# succeeds; fail the test when the deadline passes. Prints how long it took.
wait_until() {
  local secs="$1" what="$2"
  shift 2
  local t0=$SECONDS deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
  ok "$what (after $((SECONDS - t0))s)"
}

# use_namespace: a fresh namespace for this test, deleted on exit.
use_namespace() {
  E2E_NS="e2e-${E2E_NAME//_/-}-$RANDOM"
  kubectl create namespace "$E2E_NS" >/dev/null
  # The service account token controller must have made the default SA.
  wait_until 30 "namespace $E2E_NS ready" kubectl get serviceaccount default -n "$E2E_NS"
  on_exit "kubectl delete namespace $E2E_NS --wait=false"
}
k() { kubectl -n "$E2E_NS" "$@"; }

# ask_from POD HOST PORT REQUEST: one line to the statekeeper at HOST:PORT,
# sent from inside POD (busybox nc), prints the answer line.
ask_from() {
  k exec "$1" -- sh -c "echo $4 | nc -w 5 $2 $3"
}

# ask_pod POD REQUEST: the statekeeper on port 7777 inside POD.
ask_pod() { ask_from "$1" 127.0.0.1 7777 "$2"; }

# statekeeper_pod NAME NODE: a bare statekeeper pod pinned (by node selector,
# through the scheduler) to NODE, labelled app=NAME.
statekeeper_pod() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {app: $1}
spec:
  nodeSelector: {kubernetes.io/hostname: $2}
  terminationGracePeriodSeconds: 1
  containers:
  - name: statekeeper
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    args: ["--port", "7000", "--mem-mib", "16"]
    ports: [{containerPort: 7000}]
    readinessProbe:
      tcpSocket: {port: 7000}
      periodSeconds: 1
EOF
}

# ferry_pod_yaml NAME NODE MIB: a bare statekeeper pod bound to NODE on the
# ferry RuntimeClass with the serving gate, holding MIB MiB, Ready once it
# listens on 7777 (a YAML document, for k apply -f -).
ferry_pod_yaml() {
  cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {app: $1}}
spec:
  nodeName: $2
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 2
  readinessGates: [{conditionType: ferry.dev/serving}]
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "$3", "--port", "7777"]
    readinessProbe:
      tcpSocket: {port: 7777}
      periodSeconds: 1
EOF
}

pod_ready() { [[ "$(k get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
node_ready_status() { kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'; }
node_is_ready() { [[ "$(node_ready_status "$1")" == True ]]; }
node_not_ready() { [[ "$(node_ready_status "$1")" != True ]]; }

# start_copy_sampler CONTAINER NODE...: inside each NODE, every 50 ms, count
# the copies of container CONTAINER of this test's namespace that can run
# user code: runc says "running" (not paused, not stopped) and its init is
# neither exiting (PF_EXITING in /proc/PID/stat flags) nor has SIGKILL
# queued (SigPnd/ShdPnd bit 9). A source killed while frozen is thawed with
# SIGKILL queued and reads "running" to runc until its memory is freed and
# init is a zombie (tens of ms for hundreds of MiB); such a dying copy never
# returns to user space, so it is counted apart. Lines are
# "<epoch ms> <live> <dying>"; the nodes share the host's clock. Stopped on
# exit, or by stop_copy_sampler.
start_copy_sampler() {
  local container="$1" n
  shift
  _sampler="/run/ferry-e2e-samples-$E2E_NS-$container"
  _sampler_nodes=("$@")
  for n in "$@"; do
    docker exec -d "$n" bash -c "dying() {
        local s f v
        s=\$(cat /proc/\$1/stat 2>/dev/null) || return 0
        s=\${s##*) }; set -- \$s; f=\$7
        (( f & 4 )) && return 0
        for v in \$(awk '/^(SigPnd|ShdPnd):/ {print \$2}' /proc/\$1/status 2>/dev/null); do
          (( 0x\$v & 0x100 )) && return 0
        done
        return 1
      }
      while [[ ! -e $_sampler.stop ]]; do
      t=\$(date +%s%3N); c=0; d=0
      while read -r id pid; do
        f=/run/containerd/io.containerd.runtime.v2.task/k8s.io/\$id/config.json
        grep -q '\"io.kubernetes.cri.sandbox-namespace\":\"$E2E_NS\"' \$f 2>/dev/null &&
          grep -q '\"io.kubernetes.cri.container-name\":\"$container\"' \$f || continue
        if dying \$pid; then d=\$((d+1)); else c=\$((c+1)); fi
      done < <(/usr/local/sbin/runc --root /run/containerd/runc/k8s.io list 2>/dev/null | awk '\$3==\"running\" {print \$1, \$2}')
      echo \"\$t \$c \$d\" >>$_sampler; sleep 0.05; done"
    on_exit "docker exec $n sh -c 'touch $_sampler.stop; sleep 0.3; rm -f $_sampler $_sampler.stop'"
  done
}
stop_copy_sampler() {
  local n
  for n in "${_sampler_nodes[@]}"; do docker exec "$n" touch "$_sampler.stop"; done
}

# check_one_copy: fails unless, in every sampled 100 ms window, at most one
# live copy ran across the sampled nodes, and some window saw none (the
# frozen time: proves the sampler can see it). Prints the verdict, with the
# windows where a killed copy was still dying next to the live one.
check_one_copy() {
  local samples verdict n_buckets max zero two dying n
  samples="$(for n in "${_sampler_nodes[@]}"; do docker exec "$n" cat "$_sampler" | sed "s/^/$n /"; done)"
  # Per 100 ms bucket, the highest count each node saw; sum across nodes.
  # (Buckets as strings: awk would print large numbers as 1.79e+10.)
  verdict="$(awk '{ b = substr($2, 1, length($2) - 2); k = $1 " " b; if (!(k in m) || $3 > m[k]) m[k] = $3
                  if ($4 > 0) d[b] = 1; buckets[b] = 1 }
    END { for (k in m) { split(k, p, " "); sum[p[2]] += m[k] }
          for (b in buckets) { n++; if (sum[b] > max) max = sum[b]; if (sum[b] == 0) zero++; if (sum[b] > 1) two++
                               if (b in d) dying++ }
          printf "%d %d %d %d %d\n", n, max, zero, two, dying }' <<<"$samples")"
  read -r n_buckets max zero two dying <<<"$verdict"
  ((n_buckets > 20)) || fail "only $n_buckets sampled 100 ms windows"
  ((max <= 1)) || fail "two running copies in $two of $n_buckets sampled 100 ms windows"
  ((zero > 0)) || fail "never sampled the frozen window (0 running): the sampler cannot see it"
  ok "$n_buckets sampled 100 ms windows ($(wc -l <<<"$samples") samples on ${#_sampler_nodes[@]} nodes): at most $max running copy; none running in $zero; a killed copy dying (SIGKILL queued, not running) in ${dying:-0}"
}
