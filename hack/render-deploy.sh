#!/usr/bin/env bash
# deploy/ is generated from the Helm chart (charts/ferry) with its default
# values in namespace ferry-system, so the two cannot drift; the chart's
# copy of the CRDs comes from crds/ (the source of truth).
#   hack/render-deploy.sh          regenerate deploy/1*-4*.yaml and charts/ferry/files/crds
#   hack/render-deploy.sh --check  fail (and show the diff) if they are not in step
# deploy/00-namespace.yaml stays hand-written: Helm creates the namespace
# itself (--create-namespace).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
helm="$root/.cache/bin/helm"
[[ -x "$helm" ]] || { echo "render-deploy: no pinned helm (make setup)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

mkdir -p "$out/crds"
cp "$root"/crds/ferry.dev_*.yaml "$out/crds/"
for pair in rbac:10-rbac operator:20-operator webhook:25-webhook agent:30-agent runtimeclass:40-runtimeclass; do
  t="${pair%%:*}" f="${pair#*:}"
  {
    echo "# Generated from charts/ferry/templates/$t.yaml by hack/render-deploy.sh: edit the chart."
    "$helm" template ferry "$root/charts/ferry" --namespace ferry-system --show-only "templates/$t.yaml" |
      grep -v '^# Source: ' | sed '1{/^---$/d}'
  } >"$out/$f.yaml"
done

if [[ "${1:-}" == --check ]]; then
  rc=0
  for f in "$out"/*.yaml; do
    diff -u "$root/deploy/$(basename "$f")" "$f" || rc=1
  done
  diff -ru "$root/charts/ferry/files/crds" "$out/crds" || rc=1
  ((rc == 0)) || echo "render-deploy: deploy/ or the chart's CRDs are out of step; run hack/render-deploy.sh" >&2
  exit $rc
fi
cp "$out"/*.yaml "$root/deploy/"
rm -rf "$root/charts/ferry/files/crds" && cp -r "$out/crds" "$root/charts/ferry/files/crds"
echo "deploy/ and charts/ferry/files/crds regenerated"
