#!/usr/bin/env bash
# Installs Ferry into the local cluster the way a user installs it: the
# images built offline from the Dockerfile (make images) loaded into every
# node, the CRDs from crds/, then deploy/ (namespace ferry-system, RBAC,
# operator Deployment, agent DaemonSet, RuntimeClass). Waits until every
# node's agent is ready and has reported on its Node, and the operator has
# a leader. Idempotent: a re-run with unchanged images changes nothing;
# with new images the pods roll.
#
# Usage: hack/install-ferry.sh        (the cluster must be up: make cluster-up)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/lib.sh
source "$here/cluster/lib.sh"
export KUBECONFIG="$KUBECONFIG_PATH"
export PATH="$FERRY_ROOT/.cache/bin:$PATH"
tag="${FERRY_IMAGE_TAG:-dev}"

kubectl get nodes >/dev/null 2>&1 || die "no local cluster: run make cluster-up first"
log "images ..."
mapfile -t images < <(FERRY_IMAGE_TAG="$tag" "$here/images/build.sh")
"$here/cluster/load.sh" "${images[@]}"

log "CRDs and deploy/ ..."
kubectl apply -f "$FERRY_ROOT/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/migrations.ferry.dev crd/migrationpolicies.ferry.dev >/dev/null
kubectl apply -f "$FERRY_ROOT/deploy/" >/dev/null
# Same tag, new image: the pods must restart to run it.
for w in deployment/ferry-operator daemonset/ferry-agent; do
  want="$(docker image inspect -f '{{.Id}}' "ferry-${w#*/ferry-}:$tag" 2>/dev/null | cut -c8-19)"
  have="$(kubectl -n ferry-system get "$w" -o jsonpath='{.spec.template.metadata.annotations.ferry\.dev/image-id}')"
  if [[ -n "$want" && "$want" != "$have" ]]; then
    kubectl -n ferry-system patch "$w" --type=merge \
      -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"ferry.dev/image-id\":\"$want\"}}}}}" >/dev/null
  fi
done
kubectl -n ferry-system rollout status daemonset/ferry-agent --timeout=180s >/dev/null ||
  { kubectl -n ferry-system get pods -o wide; kubectl -n ferry-system logs ds/ferry-agent --tail=20 || true; die "ferry-agent did not become ready"; }
kubectl -n ferry-system rollout status deployment/ferry-operator --timeout=180s >/dev/null ||
  { kubectl -n ferry-system get pods -o wide; die "ferry-operator did not become ready"; }

for n in $(node_names); do
  for _ in $(seq 60); do
    [[ -n "$(kubectl get node "$n" -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')" ]] && break
    sleep 1
  done
  [[ -n "$(kubectl get node "$n" -o jsonpath='{.metadata.annotations.ferry\.dev/agent}')" ]] ||
    die "the agent on $n did not report (kubectl -n ferry-system logs ds/ferry-agent)"
done
for _ in $(seq 60); do
  leader="$(kubectl -n ferry-system get lease ferry-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
  [[ -n "$leader" ]] && break
  sleep 1
done
[[ -n "$leader" ]] || die "no ferry-operator leader"
log "Ferry is installed in ferry-system (operator leader: $leader)"
