#!/usr/bin/env bash
# CRIU round trip on this kernel: a process holding 64 MiB of patterned
# memory, a counter, a listening TCP socket and an established loopback
# connection is dumped (and so killed), restored with --tcp-established, and
# must come back with the same pid, memory checksum, counter, listening port,
# a working established connection, and a log that continues; its open file,
# pipe and socket pair data, thread, timer and child process too (CHECK).
set -euo pipefail
statekeeper="$1"
work="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && pkill -9 -s "$pid" 2>/dev/null || true
  [[ -n "$pid" ]] && rm -f "/tmp/statekeeper-$pid"
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$work"/img/*.log; do [[ -f "$f" ]] && { echo "--- $f"; tail -20 "$f"; }; done
  exit 1
}
wait_for() { # wait_for SECONDS COMMAND...: poll a condition with a deadline
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.1; done
}
ask() { # ask CMD: one request/response on the workload's port
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s\n' "$1" >&3
  local line; IFS= read -r -t 10 line <&3 || line="(no answer)"
  exec 3>&-
  printf '%s' "$line"
}

setsid "$statekeeper" --mem-mib 64 --port-file "$work/port" </dev/null >"$work/out.log" 2>&1 &
pid=$!
wait_for 30 test -s "$work/port" || fail "workload did not start"
port="$(cat "$work/port")"
for _ in 1 2 3; do ask INCR >/dev/null; done
[[ "$(ask COUNT)" == "count 3" ]] || fail "counter before dump"
[[ "$(ask LOOP)" == "loop ok" ]] || fail "loopback connection before dump"
[[ "$(ask CHECK)" == "check ok" ]] || fail "files/pipes/sockets/threads/timer/child before dump"
read -r _ before _ expected <<<"$(ask SUM)"
[[ "$before" == "$expected" ]] || fail "checksum before dump"
ticks_before="$(grep -c '^tick' "$work/out.log" || true)"

mkdir "$work/img"
criu dump -t "$pid" -D "$work/img" --tcp-established --network-lock nftables \
  -o dump.log -v4 || fail "criu dump"
wait "$pid" 2>/dev/null || true # the dump killed it; reap it
# The dump killed the whole tree; its pids must be free before restore.
tree_gone() { ! pgrep -s "$pid" >/dev/null; }
wait_for 10 tree_gone || fail "process tree still running after dump"

criu restore -D "$work/img" --tcp-established --network-lock nftables -d \
  -o restore.log -v4 || fail "criu restore"
kill -0 "$pid" 2>/dev/null || fail "restored process not running as pid $pid"

[[ "$(ask PID)" == "pid $pid" ]] || fail "pid after restore"
[[ "$(ask COUNT)" == "count 3" ]] || fail "counter after restore"
[[ "$(ask LOOP)" == "loop ok" ]] || fail "established connection after restore"
check="$(ask CHECK)"
[[ "$check" == "check ok" ]] || fail "after restore: $check"
read -r _ after _ expected_after <<<"$(ask SUM)"
[[ "$after" == "$expected" && "$expected_after" == "$expected" ]] ||
  fail "checksum after restore: $after, want $expected"
ticks_grew() { (($(grep -c '^tick' "$work/out.log") > ticks_before)); }
wait_for 10 ticks_grew ||
  fail "log did not continue after restore"
echo "ok: pid $pid restored with checksum $after, counter, listening port $port and established connection intact"
