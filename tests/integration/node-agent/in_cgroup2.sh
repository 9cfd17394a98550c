#!/bin/bash
# Runs a node-agent integration test binary on cgroup v2 on a cgroup v1 host:
# in a private mount namespace, the unified hierarchy is mounted over
# /sys/fs/cgroup, so runc (which decides by statfs of /sys/fs/cgroup) makes
# v2 cgroups and freezes with cgroup.freeze, kills with cgroup.kill, and CRIU
# freezes through the v2 freezer. The v1 controllers stay bound to their v1
# hierarchies, so the v2 cgroups have no cpu/memory controllers: this covers
# freeze, thaw, kill-while-frozen and checkpoint/restore, not resource
# limits. FERRY_TEST_CGROUP=2 makes every test assert it really runs on v2.
# On a host that is already cgroup v2, the binary runs as it is.
set -euo pipefail
binary=$1
shift
export FERRY_TEST_CGROUP=2
if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
  exec "$binary" "$@"
fi
exec unshare --mount --propagation private -- /bin/bash -c '
  set -euo pipefail
  mount -t cgroup2 none /sys/fs/cgroup || {
    echo "in_cgroup2.sh: cannot mount the cgroup v2 hierarchy on /sys/fs/cgroup" >&2
    exit 1
  }
  exec "$@"' in_cgroup2 "$binary" "$@"
