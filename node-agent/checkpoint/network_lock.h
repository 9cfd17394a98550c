// CRIU's network lock, left behind. While CRIU dumps a container in its own
// network namespace it drops every packet there (an iptables chain named
// CRIU jumped to from INPUT and OUTPUT; an `inet CRIU-*` nftables table with
// --network-lock nftables) and removes the lock when the dump ends. A CRIU
// that is killed in between (its agent restarted, the node agent's pod
// deleted) never does: the container, once thawed for a rollback, runs but
// is cut off from every client. This removes such a lock. CRIU's own lock
// and unlock are in criu/net.c (iptables_network_lock_internal,
// iptables_network_unlock_internal); the same iptables binary CRIU used
// (the node agent image's) must run this, so both agree on the backend.
#pragma once

#include <string>

#include "status/status.h"

namespace ferry::checkpoint {

// Removes CRIU's network lock from the network namespace of process `pid`
// (the container's init) if there is one. Returns what it removed ("" when
// there was no lock), or why it could not look or remove.
Result<std::string> release_criu_network_lock(int pid);

// The shell script release_criu_network_lock runs inside the namespace
// (exposed for tests and for reading).
const std::string& criu_network_unlock_script();

}  // namespace ferry::checkpoint
