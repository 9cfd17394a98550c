#!/usr/bin/env bash
# Migration on the real local cluster, as users see it, against the
# baseline they would otherwise use: deleting the pod and recreating it
# (which loses its in-memory state). For each size (MiB, default 64 512
# 1024), in the same run:
#   ferry     kubectl apply of a Migration -> the restored pod Ready (its
#             readiness gate True, so Services route to it); plus the
#             Migration's own measured durations (freeze, checkpoint,
#             transfer, restore, total) and its phase timeline;
#   recreate  kubectl delete of the same pod -> a new pod from the same spec
#             on the target node Ready (state lost).
#   postcopy  the same kubectl apply with spec.mode PostCopy, of a fresh pod
#             of the same size: the restored pod is Ready while its memory
#             is still arriving; "total" then includes the page transfer,
#             which the Migration waits for before it switches.
# Every time is taken here with the same clock and the same polling (50 ms
# kubectl get), so the columns compare. FERRY_BENCH_MODES="Cold" skips the
# PostCopy row. The cluster is brought up and
# Ferry installed first (idempotent). The last line is the 1 GiB summary.
#
# Usage: bench/e2e/bench_e2e.sh [MiB...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../hack/cluster/lib.sh
source "$root/hack/cluster/lib.sh"
export KUBECONFIG="$KUBECONFIG_PATH" PATH="$root/.cache/bin:$PATH"
sizes=("$@")
((${#sizes[@]})) || sizes=(64 512 1024)
src=ferry-worker-1 dst=ferry-worker-2 ns=ferry-bench

make -s -C "$root" cluster-up >/dev/null
"$root/hack/install-ferry.sh" >/dev/null 2>&1 || "$root/hack/install-ferry.sh"
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
# A VM guest's free page reporting hands freed memory back to the
# hypervisor, and whatever allocates next (the dump's page cache on the
# shared directory, the restored process) faults it in from the host again:
# on session 9's VM a 1 GiB buffered write to ext4 took 1.4-2.3 s with it
# and 0.23-0.25 s without. That is the hypervisor billing a step, not work
# a migration does, so it is off for the run, as in bench-engine
# (bench/results/engine.md, session 7); FERRY_BENCH_PAGE_REPORTING=on keeps it.
knob=/sys/module/page_reporting/parameters/page_reporting_order
saved_order=""
if [[ -w "$knob" && "${FERRY_BENCH_PAGE_REPORTING:-}" != on ]]; then
  saved_order="$(cat "$knob")"
  echo 11 >"$knob"
fi
cleanup() {
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  [[ -z "$saved_order" ]] || echo "$saved_order" >"$knob"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ready() { [[ "$(kubectl -n "$ns" get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; }
wait_ready() { local d=$((SECONDS + 300)); until ready "$1"; do ((SECONDS < d)) || { echo "timeout: $1 not Ready" >&2; exit 1; }; sleep 0.05; done; }
pod() { # pod NAME NODE MIB
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {app: $1}}
spec:
  nodeName: $2
  runtimeClassName: ferry
  terminationGracePeriodSeconds: 1
  readinessGates: [{conditionType: ferry.dev/serving}]
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/statekeeper", "--mem-mib", "$3", "--port", "7777"]
    readinessProbe: {tcpSocket: {port: 7777}, periodSeconds: 1}
EOF
}

echo "# bench-e2e $(date -u +%FT%TZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
if [[ -n "$saved_order" ]]; then
  echo "# guest free page reporting: off for this run (page_reporting_order $saved_order -> 11, put back at exit)"
elif [[ -r "$knob" ]]; then
  echo "# guest free page reporting: left as it is (page_reporting_order $(cat "$knob"))"
fi
modes=(${FERRY_BENCH_MODES:-Cold PostCopy})
printf '%-6s %-9s %-9s %-8s %-8s %-10s %-9s %-9s %-9s %-10s %s\n' MiB mode apply→Ready freeze checkpoint transfer restore total image recreate "state after migrate"
declare -A summary
for mib in "${sizes[@]}"; do
  for mode in "${modes[@]}"; do
    name="keeper-$mib-${mode,,}"
    pod "$name" "$src" "$mib"
    wait_ready "$name"
    kubectl -n "$ns" exec "$name" -- sh -c 'echo INCR | nc -w 3 127.0.0.1 7777' >/dev/null
    sum_before="$(kubectl -n "$ns" exec "$name" -- sh -c 'echo SUM | nc -w 3 127.0.0.1 7777')"

    t0="$(now)"
    kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Migration
metadata: {name: move-$mib-${mode,,}}
spec: {podName: $name, targetNode: $dst, mode: $mode}
EOF
    target=""
    until [[ -n "$target" ]]; do target="$(kubectl -n "$ns" get migration "move-$mib-${mode,,}" -o jsonpath='{.status.targetPod}')"; sleep 0.05; done
    wait_ready "$target"
    apply_to_ready="$(since "$t0")"
    kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded "migration/move-$mib-${mode,,}" --timeout=120s >/dev/null
    m="$(kubectl -n "$ns" get migration "move-$mib-${mode,,}" -o json)"
    d() { jq -r ".status.durations.$1 // \"-\"" <<<"$m"; }
    bytes="$(jq -r '.status.bytes.checkpointed // 0' <<<"$m")"
    sum_after="$(kubectl -n "$ns" exec "$target" -- sh -c 'echo SUM | nc -w 3 127.0.0.1 7777')"
    state="identical"
    [[ "$sum_after" == "$sum_before" ]] || state="DIFFERS ($sum_before -> $sum_after)"

    recreate="-"
    if [[ "$mode" == Cold ]]; then
      # Baseline: delete the restored pod and recreate it from the same
      # spec on the same node; Ready again, its memory rebuilt from scratch.
      t0="$(now)"
      kubectl -n "$ns" delete pod "$target" --wait=true >/dev/null
      pod "$target" "$dst" "$mib"
      wait_ready "$target"
      recreate="$(since "$t0")"
      summary[$mib]="apply-to-Ready ${apply_to_ready}s, freeze $(d freeze), delete-and-recreate ${recreate}s (state lost)"
      recreate="${recreate}s"
    else
      summary[$mib]+="; $mode apply-to-Ready ${apply_to_ready}s, freeze $(d freeze)"
    fi

    printf '%-6s %-9s %-9s %-8s %-8s %-10s %-9s %-9s %-9s %-10s %s\n' "$mib" "$mode" "${apply_to_ready}s" "$(d freeze)" \
      "$(d checkpoint)" "$(d transfer)" "$(d restore)" "$(d total)" "$((bytes / 1048576))MiB" "$recreate" "$state"
    echo "  phases: $(jq -r '[.status.phaseTransitionTimestamps[] | "\(.phase) \(.time[11:23])"] | join(", ")' <<<"$m")"
    kubectl -n "$ns" delete pod "$target" --wait=false >/dev/null
  done
done
last="${sizes[-1]}"
for s in "${sizes[@]}"; do [[ "$s" == 1024 ]] && last=1024; done
echo "${last} MiB: ${summary[$last]}"
