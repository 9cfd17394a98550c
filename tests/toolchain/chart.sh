#!/usr/bin/env bash
# The Helm chart, offline (the install round trip on the cluster is issue
# #7's): `helm lint --strict` passes; values.schema.json rejects unknown
# keys and bad values with the schema's message; crds.install and
# crds.keep do what they say; deploy/ and the chart's copy of the CRDs are
# in step with the chart and crds/ (hack/render-deploy.sh --check).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
chart="$root/charts/ferry"
fail() { echo "FAIL: $*"; exit 1; }

helm lint --strict "$chart" >/dev/null || { helm lint --strict "$chart"; fail "helm lint"; }
echo "ok: helm lint --strict"

rejects() { # rejects WORDS --set ...
  local words="$1" out
  shift
  if out="$(helm template ferry "$chart" "$@" 2>&1)"; then fail "accepted $*"; fi
  [[ "$out" == *"$words"* ]] || fail "$*: message is: $out"
  echo "ok: $* rejected: $(grep -o "$words.*" <<<"$out" | head -1)"
}
rejects "additional properties 'replica' not allowed" --set operator.replica=3
rejects "additional properties 'bogus' not allowed" --set bogus=1
rejects "does not match pattern" --set agent.hostRuntime=runc
rejects "value must be one of" --set agent.image.pullPolicy=Sometimes
rejects "minimum" --set operator.replicas=0

all="$(helm template ferry "$chart" --namespace ferry-system)"
[[ "$(grep -c '^kind: CustomResourceDefinition' <<<"$all")" == 2 ]] || fail "CRDs not rendered"
[[ "$(grep -c 'helm.sh/resource-policy: keep' <<<"$all")" == 2 ]] || fail "CRDs not kept on uninstall"
none="$(helm template ferry "$chart" --set crds.install=false)"
! grep -q '^kind: CustomResourceDefinition' <<<"$none" || fail "crds.install=false still renders CRDs"
loose="$(helm template ferry "$chart" --set crds.keep=false)"
! grep -q 'resource-policy' <<<"$loose" || fail "crds.keep=false still keeps them"
custom="$(helm template ferry "$chart" --namespace other --set agent.sharedStoragePath=/mnt/shared --set operator.replicas=3)"
grep -q -- '--snapshot-root=/mnt/shared/snapshots' <<<"$custom" || fail "sharedStoragePath not used"
grep -q 'replicas: 3' <<<"$custom" || fail "replicas not used"
grep -q -- '--leader-election-namespace=other' <<<"$custom" || fail "release namespace not used"
echo "ok: crds.install, crds.keep, values reach the manifests"

"$root/hack/render-deploy.sh" --check || fail "deploy/ is not generated from the chart"
echo "ok: deploy/ and the chart's CRDs are in step"
