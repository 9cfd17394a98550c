#!/usr/bin/env bash
# Several Migrations at once, on the real cluster with Ferry installed
# (operator defaults: at most 2 in flight per node):
#   - two Migrations of the same pod applied together: one moves it, the
#     other ends Failed with AlreadyMigrating naming the first;
#   - three Migrations from one node applied together: two run, the third
#     waits with the condition Queued (ConcurrencyLimit, naming the node)
#     and runs once one finishes; all three succeed with their state.
source "$(dirname "$0")/lib.sh"
use_namespace
src=ferry-worker-1 dst=ferry-worker-2

keeper() { ferry_pod_yaml "$1" "$src" "$2"; }  # keeper NAME MIB
migration() { # migration NAME POD
  printf -- '---\napiVersion: ferry.dev/v1alpha1\nkind: Migration\nmetadata: {name: %s}\nspec: {podName: %s, targetNode: %s}\n' "$1" "$2" "$dst"
}
phase() { k get migration "$1" -o jsonpath='{.status.phase}'; }
final() { [[ "$(phase "$1")" =~ ^(Succeeded|Failed|RolledBack)$ ]]; }

check "pods on $src"
{ keeper twin 64; keeper q1 256; keeper q2 256; keeper q3 256; } | k apply -f - >/dev/null
for p in twin q1 q2 q3; do
  wait_until 120 "$p Ready" pod_ready "$p"
  ask_pod "$p" INCR >/dev/null
  [[ "$(ask_pod "$p" COUNT)" == "count 1" ]] || fail "$p: $(ask_pod "$p" COUNT)"
done

check "two Migrations of the same pod, applied together"
{ migration twin-a twin; migration twin-b twin; } | k apply -f - >/dev/null
wait_until 120 "both final" bash -c "[[ \$(kubectl -n $E2E_NS get migration twin-a -o jsonpath='{.status.phase}') =~ ^(Succeeded|Failed|RolledBack)\$ && \$(kubectl -n $E2E_NS get migration twin-b -o jsonpath='{.status.phase}') =~ ^(Succeeded|Failed|RolledBack)\$ ]]"
phases="$(phase twin-a) $(phase twin-b)"
case "$phases" in
  "Succeeded Failed") won=twin-a lost=twin-b ;;
  "Failed Succeeded") won=twin-b lost=twin-a ;;
  *) k get migrations -o yaml; fail "phases: $phases (one Succeeded and one Failed expected)" ;;
esac
reason="$(k get migration "$lost" -o jsonpath='{.status.failure.reason}')"
message="$(k get migration "$lost" -o jsonpath='{.status.failure.message}')"
[[ "$reason" == AlreadyMigrating && "$message" == *"$won"* ]] || fail "$lost: $reason: $message"
target="$(k get migration "$won" -o jsonpath='{.status.targetPod}')"
wait_until 60 "$target Ready" pod_ready "$target"
[[ "$(ask_pod "$target" COUNT)" == "count 1" ]] || fail "$target: $(ask_pod "$target" COUNT)"
ok "$won moved twin ($target, count 1); $lost: $reason: $message"

check "three Migrations from $src at once: two run, the third is queued"
{ migration move-q1 q1; migration move-q2 q2; migration move-q3 q3; } | k apply -f - >/dev/null
queued=""
for _ in $(seq 1 100); do
  queued="$(k get migrations -o json | jq -r '.items[] | select(any(.status.conditions[]?; .type == "Queued" and .status == "True")) | "\(.metadata.name): \(.status.conditions[] | select(.type == "Queued") | .message)"' | head -1)"
  [[ -n "$queued" ]] && break
  sleep 0.1
done
[[ -n "$queued" ]] || fail "no Migration was ever reported Queued"
[[ "$queued" == *"limit 2 per node"* ]] || fail "Queued message: $queued"
ok "$queued"
for q in q1 q2 q3; do wait_until 180 "move-$q final" final "move-$q"; done
for q in q1 q2 q3; do
  [[ "$(phase "move-$q")" == Succeeded ]] || { k get migration "move-$q" -o yaml; fail "move-$q ended $(phase "move-$q")"; }
  t="$(k get migration "move-$q" -o jsonpath='{.status.targetPod}')"
  wait_until 60 "$t Ready" pod_ready "$t"
  [[ "$(ask_pod "$t" COUNT)" == "count 1" ]] || fail "$t: $(ask_pod "$t" COUNT)"
done
name="${queued%%:*}"
[[ "$(k get migration "$name" -o jsonpath='{.status.conditions[?(@.type=="Queued")].status}')" == False ]] ||
  fail "$name still reports Queued"
ok "all three Succeeded with their state; $name was admitted once a slot freed"
