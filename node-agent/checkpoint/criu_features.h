// What this node's kernel and CRIU can do, detected at run time (never
// assumed): the migration modes depend on it. PreCopy needs soft-dirty
// memory tracking to know which pages changed between pre-dumps; PostCopy
// needs userfaultfd (with non-cooperative events) to fetch pages on demand.
// The agent publishes these facts so the operator picks a mode the source
// and target nodes both support, and refuses the others with a clear reason.
#pragma once

#include <functional>
#include <string>

#include "status/status.h"

namespace ferry::checkpoint {

enum class Mode { kCold, kPostCopy, kPreCopy };
std::string mode_name(Mode mode);
Result<Mode> parse_mode(const std::string& name);

struct CriuFeatures {
  std::string criu_version;   // e.g. "4.2.1"
  bool check_passed = false;  // `criu check` (the basics) passed
  bool mem_dirty_track = false;
  bool uffd = false;
  bool uffd_noncoop = false;
  bool network_lock_nftables = false;  // CRIU built with libnftables, kernel able
  // `--lazy-dump-mode read` (our CRIU patch, see LazyDumpRequest::
  // read_pages_on_request): a PostCopy freeze that does not grow with memory.
  bool lazy_dump_read = false;
  // CRIU built with GnuTLS (it links libgnutls): `--tls` works. A CRIU
  // without it accepts --tls and then fails every transfer obscurely (its
  // tls.h stubs), so PostCopy, whose pages only travel encrypted
  // (page_transfer_tls.h), is refused on such a node.
  bool tls = false;
};

// CRIU's network lock method the agent dumps with here: "nftables" where
// CRIU and the kernel support it (CRIU locks in its own process), else
// "iptables" (CRIU's default; a dozen iptables processes per migration).
inline std::string network_lock_method(const CriuFeatures& f) {
  return f.network_lock_nftables ? "nftables" : "iptables";
}

// Runs `criu --version`, `criu --help`, `ldd criu`, `criu check` and `criu check --feature X`
// through `run` (argv -> exit code and stdout), so tests can fake the binary.
using CommandRunner =
    std::function<Result<std::pair<int, std::string>>(const std::vector<std::string>& argv)>;
Result<CriuFeatures> detect_criu_features(const std::string& criu_binary, const CommandRunner& run);
// The same with the real binary.
Result<CriuFeatures> detect_criu_features(const std::string& criu_binary);

// Ok when `mode` can run on a node with `features`; otherwise Unsupported
// with reason "ModeUnsupportedOnNode" and a sentence naming what is missing.
Status check_mode_supported(Mode mode, const CriuFeatures& features);

}  // namespace ferry::checkpoint
