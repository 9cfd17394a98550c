#include "checkpoint/network_lock.h"

#include <chrono>

#include "process/subprocess.h"

namespace ferry::checkpoint {

const std::string& criu_network_unlock_script() {
  // Jumps first, then the chain (iptables-nft refuses to delete a chain
  // that is still referenced); each family only where its tool exists.
  static const std::string script = R"(set -u
removed=""
for t in iptables ip6tables; do
  command -v "$t" >/dev/null 2>&1 || continue
  for c in INPUT OUTPUT; do
    while "$t" -w -C "$c" -j CRIU >/dev/null 2>&1; do
      "$t" -w -D "$c" -j CRIU || exit 1
      removed="$removed $t:$c->CRIU"
    done
  done
  if "$t" -w -S CRIU >/dev/null 2>&1; then
    "$t" -w -F CRIU && "$t" -w -X CRIU || exit 1
    removed="$removed $t:CRIU"
  fi
done
if command -v nft >/dev/null 2>&1; then
  for table in $(nft list tables 2>/dev/null | awk '$1 == "table" && $2 == "inet" && $3 ~ /^CRIU-/ {print $3}'); do
    nft delete table inet "$table" || exit 1
    removed="$removed nft:inet:$table"
  done
fi
printf '%s' "${removed# }"
)";
  return script;
}

Result<std::string> release_criu_network_lock(int pid) {
  if (pid <= 0) return invalid_argument("no process to find the network namespace of");
  const std::string netns = "/proc/" + std::to_string(pid) + "/ns/net";
  auto r = process::run({"nsenter", "--net=" + netns, "sh", "-c", criu_network_unlock_script()},
                        std::chrono::seconds(30));
  if (!r.ok()) return r.status().with_context("remove CRIU's network lock in " + netns);
  if (r->exit_code != 0) {
    return internal_error("remove CRIU's network lock in " + netns + ": exit " +
                          std::to_string(r->exit_code) + ": " + r->err);
  }
  return r->out;
}

}  // namespace ferry::checkpoint
