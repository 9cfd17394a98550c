#!/usr/bin/env bash
# The Helm chart on the real cluster (issue #7): `helm install` brings up a
# working Ferry (an agent with a report on every node, two operators with a
# leader, the webhooks served with the CA the operator injected), and
# `helm uninstall` leaves the cluster as it was: the same objects in Ferry's
# namespace and cluster-wide, no agent reports left on the Nodes, and only
# the CRDs kept (crds.keep, the default). Runs before e2e.ferry_install,
# which then installs from deploy/ for the rest of the suite.
source "$(dirname "$0")/lib.sh"
ns=ferry-system release=ferry-e2e

# Everything Ferry could leave behind, as sorted "kind/name" lines.
inventory() {
  kubectl get crd,clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration,runtimeclass -o name |
    grep -v '/system:' | sort
  kubectl -n "$ns" get all,secret,configmap,serviceaccount,role,rolebinding,lease -o name 2>/dev/null |
    grep -v -e '^serviceaccount/default$' -e '^configmap/kube-root-ca.crt$' | sort
  for n in $(node_names); do
    kubectl get node "$n" -o json | jq -r '.metadata.annotations | keys[] | select(startswith("ferry.dev/"))' | sed "s|^|node/$n annotation |"
  done
}

check "the cluster before (no Ferry installed yet)"
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
helm -n "$ns" status "$release" >/dev/null 2>&1 && fail "a release $release is already installed"
before="$(inventory)"
echo "$before" | sed 's/^/  /'
mapfile -t images < <("$FERRY_ROOT/hack/images/build.sh")
"$FERRY_ROOT/hack/cluster/load.sh" "${images[@]}" >/dev/null
ok "images ${images[*]} loaded into the nodes"

check "helm install"
on_exit "helm -n $ns uninstall $release --wait >/dev/null 2>&1"
helm -n "$ns" install "$release" "$FERRY_ROOT/charts/ferry" --wait --timeout 5m >/dev/null ||
  { kubectl -n "$ns" get pods -o wide; fail "helm install"; }
ok "$(helm -n "$ns" list -o json | jq -r '.[] | "\(.name) \(.chart) \(.status)"')"
for n in $(node_names); do
  wait_until 60 "the agent on $n reported" bash -c "[[ -n \$(kubectl get node $n -o jsonpath='{.metadata.annotations.ferry\\.dev/agent}') ]]"
done
wait_until 60 "an operator leads" bash -c "[[ -n \$(kubectl -n $ns get lease ferry-operator -o jsonpath='{.spec.holderIdentity}') ]]"
injected() { [[ -n "$(kubectl get mutatingwebhookconfiguration ferry-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]; }
wait_until 90 "the operator injected its CA into the webhook configuration" injected
[[ -n "$(kubectl -n "$ns" get secret ferry-webhook-tls -o jsonpath='{.data.tls\.crt}')" ]] || fail "no serving certificate in the Secret"
use_namespace
# (Until the API server trusts the injected CA, the guard's call fails and
# its failure policy, Ignore, lets the pod in: delete it and try again.)
guarded() {
  local out
  out="$(k create -f - 2>&1 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: sneaky, annotations: {ferry.dev/restore-from: "x"}}
spec: {containers: [{name: app, image: $WORKLOAD_IMAGE, imagePullPolicy: Never}]}
EOF
)" || true
  k delete pod sneaky --wait=false >/dev/null 2>&1 || true
  grep -q "only Ferry may create a pod" <<<"$out"
}
wait_until 60 "the webhook answers over TLS (the guard rejects a restore annotation)" guarded

check "helm uninstall leaves the cluster as it was (CRDs kept)"
helm -n "$ns" uninstall "$release" --wait --timeout 3m >/dev/null || fail "helm uninstall"
gone() { [[ -z "$(kubectl -n "$ns" get pods -o name)" ]]; }
wait_until 120 "Ferry's pods are gone" gone
reports_gone() { [[ -z "$(inventory | grep '^node/' || true)" ]]; }
wait_until 30 "no agent report left on the Nodes (the pre-delete hook withdrew them)" reports_gone
after="$(inventory)"
expected="$( (echo "$before"; echo customresourcedefinition.apiextensions.k8s.io/migrationpolicies.ferry.dev; echo customresourcedefinition.apiextensions.k8s.io/migrations.ferry.dev) | sort -u)"
if [[ "$after" != "$expected" ]]; then
  diff <(echo "$expected") <(echo "$after") || true
  fail "the cluster after helm uninstall differs (< expected, > found)"
fi
[[ "$(kubectl get crd migrations.ferry.dev -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" == keep ]] ||
  fail "the CRDs are not marked keep"
ok "only the CRDs are left (helm.sh/resource-policy: keep); $(wc -l <<<"$after") objects compared"
