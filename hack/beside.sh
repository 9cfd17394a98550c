#!/usr/bin/env bash
# Runs two shell commands at once and waits for both. The first to fail
# stops the other (its whole process tree), and its exit code is this
# script's. `make test` builds the pinned test tooling beside the C++ trees
# this way: on a cold 2-core machine each half takes about as long.
#
# Usage: beside.sh 'COMMAND A' 'COMMAND B'
set -uo pipefail
(($# == 2)) || { echo "usage: beside.sh 'COMMAND A' 'COMMAND B'" >&2; exit 2; }

# tree PID: PID and every descendant, parents first.
tree() {
  echo "$1"
  local child
  for child in $(pgrep -P "$1"); do tree "$child"; done
}

bash -c "$1" &
a=$!
bash -c "$2" &
b=$!
wait -n -p first "$a" "$b"
rc=$?
if ((first == a)); then other=$b failed="$1"; else other=$a failed="$2"; fi
if ((rc != 0)); then
  echo "beside.sh: '$failed' failed (exit $rc); stopping the other command" >&2
  # shellcheck disable=SC2046 # one pid per word
  kill -TERM $(tree "$other") 2>/dev/null
  wait "$other" 2>/dev/null
  exit "$rc"
fi
wait "$other"
