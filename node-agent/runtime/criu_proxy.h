// ferry-runc's CRIU proxy: lets a restore verify the snapshot's memory
// images while CRIU reads them, instead of reading them twice in a row.
//
// runc restores by running `criu swrk <fd>` found in PATH and speaking
// CRIU's RPC over that socket. For a restore whose memory images are not
// verified yet, ferry-runc runs runc with a directory first in PATH whose
// `criu` is ferry-runc itself; started under that name, ferry-runc is this
// proxy. It starts the real CRIU on a socket of its own and relays every
// message both ways unchanged (passed descriptors included). Meanwhile
// ferry-runc, which runs runc as its child, verifies the images: it starts
// before runc does, so the verification has a head start on CRIU, and
// writes its verdict to a file. CRIU's `post-restore` notification comes
// when every page is in place and before any restored task runs again
// (criu/cr-restore.c: restore_root_task); the proxy holds it until the
// verdict is in. A mismatch answers CRIU with failure instead, so CRIU
// kills the restored tasks and runc reports a failed restore; the mismatch
// itself goes to a file ferry-runc reports as the reason. Any other use of
// `criu` (version and feature checks, dumps) is the real CRIU, exec'd.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::runtime {

// The environment through which ferry-runc configures the proxy (runc
// passes its environment on to CRIU).
inline constexpr const char* kProxyRealCriuEnv = "FERRY_CRIU_PROXY_REAL";
inline constexpr const char* kProxyVerdictFileEnv = "FERRY_CRIU_PROXY_VERDICT_FILE";
inline constexpr const char* kProxyErrorFileEnv = "FERRY_CRIU_PROXY_ERROR_FILE";
// The FIFO through which the proxy says that CRIU waits (criu_waiting.h).
inline constexpr const char* kProxyCriuWaitingEnv = "FERRY_CRIU_PROXY_WAITING_FIFO";

// Runs the proxy for `args` (the arguments after argv[0]) and returns the
// exit code (the real CRIU's). `verdict` is asked at post-restore until it
// has one (nullopt: not yet); an error is written to `error_file` and fails
// the restore. Empty: every call is the real CRIU's. While there is no
// verdict yet, `criu_waits` (if set) is called until it returns true, to
// say that CRIU waits for it (criu_waiting.h).
int run_criu_proxy(const std::string& real_criu, const std::vector<std::string>& args,
                   const std::function<std::optional<Status>()>& verdict,
                   const std::string& error_file,
                   const std::function<bool()>& criu_waits = nullptr);

// The verification's verdict, passed from ferry-runc to the proxy (its
// grandchild, through runc) in a file written atomically once: "ok", or
// the mismatch. write_verdict writes it; read_verdict returns it once it is
// there (DataLoss for a mismatch), nullopt before.
Status write_verdict(const std::string& file, const Status& verdict);
std::optional<Status> read_verdict(const std::string& file);

}  // namespace ferry::runtime
