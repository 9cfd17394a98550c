#!/usr/bin/env bash
# Acceptance: `criu check` passes inside every node, and a running container
# inside a node (plain runc, statekeeper workload) survives `runc checkpoint`
# / `runc restore` with its memory checksum, counter, pid and established
# TCP connection intact. The images go to the shared storage, and a second
# round restores them on ANOTHER node from the same path: the storage the
# Ferry agents will use.
source "$(dirname "$0")/lib.sh"
mapfile -t nodes < <(node_names)
statekeeper="${STATEKEEPER:-$FERRY_ROOT/build/tests/workloads/statekeeper}"
[[ -x "$statekeeper" ]] || fail "statekeeper binary missing at $statekeeper"

for n in "${nodes[@]}"; do
  check "criu check inside $n"
  out="$(docker exec "$n" criu check 2>&1)" || { echo "$out"; fail "criu check failed in $n"; }
  [[ "$out" == *"Looks good."* ]] || { echo "$out"; fail "criu check in $n did not say 'Looks good.'"; }
  ok "$n: $(grep 'Looks good' <<<"$out")"
done

src="${nodes[0]}" dst="${nodes[1]}"
id="e2e-sk-$RANDOM"
img="$FERRY_SHARED_DIR/e2e-criu-$id"
on_exit "rm -rf $img"
for n in "$src" "$dst"; do
  docker exec "$n" mkdir -p /var/lib/ferry-e2e
  docker cp "$statekeeper" "$n:/var/lib/ferry-e2e/statekeeper" >/dev/null
  docker cp "$E2E_DIR/in_node_runc.sh" "$n:/var/lib/ferry-e2e/in_node_runc.sh" >/dev/null
  on_exit "docker exec $n bash /var/lib/ferry-e2e/in_node_runc.sh cleanup $id; docker exec $n rm -rf /var/lib/ferry-e2e"
done
# other_state NODE WHEN: the workload's CHECK (files, pipes, socket pair,
# thread, timerfd, child process). A periodic timerfd that expired unread at
# dump time used to come back disarmed (a CRIU 4.2.1 bug); the pinned build
# carries hack/toolchain/criu-patches/4.2.1/0001-timerfd-*.patch, so any
# failure, the timer included, fails the test.
other_state() {
  local got
  got="$(ask "$1" CHECK)"
  [[ "$got" == "check ok" ]] || fail "other state $2: $got"
}
on_node() { local n="$1"; shift; docker exec "$n" bash /var/lib/ferry-e2e/in_node_runc.sh "$1" "$id" "${@:2}"; }
ask() { on_node "$1" ask "$2"; }
answers() { [[ "$(ask "$1" PID)" == "pid 1" ]]; }
running_on() { [[ "$(on_node "$1" state)" == running ]]; }

check "statekeeper in a runc container inside $src"
on_node "$src" start || fail "runc run in $src failed"
wait_until 30 "statekeeper answering inside $src" answers "$src"
for _ in 1 2 3; do ask "$src" INCR >/dev/null; done
[[ "$(ask "$src" COUNT)" == "count 3" ]] || fail "counter before checkpoint"
[[ "$(ask "$src" LOOP)" == "loop ok" ]] || fail "established connection before checkpoint"
[[ "$(ask "$src" CHECK)" == "check ok" ]] || fail "other state before checkpoint: $(ask "$src" CHECK)"
read -r _ sum_before _ expected <<<"$(ask "$src" SUM)"
[[ "$sum_before" == "$expected" ]] || fail "checksum before checkpoint: $sum_before != $expected"
ok "running: count 3, loop ok, check ok, memory checksum $sum_before"

check "runc checkpoint / runc restore on $src round-trips the in-memory state"
on_node "$src" checkpoint "$img/1" || fail "runc checkpoint in $src failed"
[[ "$(on_node "$src" state)" != running ]] || fail "container still running after checkpoint"
# (CRIU keeps the netns locked after the dump: a probe gets no answer at all.)
docker exec -e ASK_TIMEOUT=3 "$src" bash /var/lib/ferry-e2e/in_node_runc.sh ask "$id" PID >/dev/null 2>&1 &&
  fail "the workload still answers after checkpoint"
ok "checkpointed to $img/1 ($(du -sh "$img/1" | cut -f1)); the container is gone"
on_node "$src" restore "$img/1" || fail "runc restore in $src failed"
wait_until 10 "restored container running" running_on "$src"
[[ "$(ask "$src" PID)" == "pid 1" ]] || fail "pid after restore"
[[ "$(ask "$src" COUNT)" == "count 3" ]] || fail "counter after restore: $(ask "$src" COUNT)"
[[ "$(ask "$src" LOOP)" == "loop ok" ]] || fail "established connection after restore"
other_state "$src" "after restore on $src"
read -r _ sum_after _ expected_after <<<"$(ask "$src" SUM)"
[[ "$sum_after" == "$sum_before" && "$expected_after" == "$expected" ]] ||
  fail "checksum after restore $sum_after, want $sum_before"
ok "restored on $src: pid 1, count 3, loop ok, checksum $sum_after"

check "checkpoint on $src, restore on $dst through the shared storage"
ask "$src" INCR >/dev/null
on_node "$src" checkpoint "$img/2" || fail "runc checkpoint in $src failed"
[[ "$(docker exec "$dst" cat "$img/2/inventory.img" | wc -c)" -gt 0 ]] || fail "$dst does not see the images at $img/2"
on_node "$dst" restore "$img/2" || fail "runc restore in $dst failed"
wait_until 10 "restored container running on $dst" running_on "$dst"
[[ "$(ask "$dst" COUNT)" == "count 4" ]] || fail "counter after cross-node restore: $(ask "$dst" COUNT)"
[[ "$(ask "$dst" LOOP)" == "loop ok" ]] || fail "established connection after cross-node restore"
other_state "$dst" "after restore on $dst"
read -r _ sum_moved _ _ <<<"$(ask "$dst" SUM)"
[[ "$sum_moved" == "$sum_before" ]] || fail "checksum after cross-node restore $sum_moved, want $sum_before"
ok "moved $src -> $dst: count 4, loop ok, checksum $sum_moved"
