#!/usr/bin/env bash
# The migration benchmark (make bench-e2e) runs on the local cluster and
# prints its summary line: here with one small size, so the suite keeps it
# working. Its timings are printed, never asserted (they belong in bench/;
# bench/results/ holds the recorded runs).
source "$(dirname "$0")/lib.sh"

check "bench/e2e/bench_e2e.sh 64 (one size)"
out="$("$FERRY_ROOT/bench/e2e/bench_e2e.sh" 64 2>&1)" || { echo "$out"; fail "the benchmark failed"; }
grep -v '^NAME\|^ferry-worker' <<<"$out"
last="$(tail -1 <<<"$out")"
[[ "$last" =~ ^64\ MiB:\ apply-to-Ready\ [0-9.]+s,\ freeze\ [0-9.]+s,\ delete-and-recreate\ [0-9.]+s\ \(state\ lost\)\;\ PostCopy\ apply-to-Ready\ [0-9.]+s,\ freeze\ [0-9.]+s$ ]] ||
  fail "last line: $last"
grep -q '^64 *Cold .* identical$' <<<"$out" || fail "the state was not identical after the benchmark's Cold migration"
grep -q '^64 *PostCopy .* identical$' <<<"$out" || fail "the state was not identical after the benchmark's PostCopy migration"
ok "summary line: $last"
