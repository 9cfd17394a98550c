// ferry-runc's CRIU proxy: lets a restore verify the snapshot's memory
// images while CRIU reads them, instead of reading them twice in a row.
//
// runc restores by running `criu swrk <fd>` found in PATH and speaking
// CRIU's RPC over that socket. For a restore whose memory images are not
// verified yet, ferry-runc runs runc with a directory first in PATH whose
// `criu` is ferry-runc itself; started under that name, ferry-runc is this
// proxy. It starts the real CRIU on a socket of its own and relays every
// message both ways unchanged (passed descriptors included), while another
// thread verifies the images. CRIU's `post-restore` notification comes when
// every page is in place and before any restored task runs again
// (criu/cr-restore.c: restore_root_task); the proxy holds it until the
// verification ends. A mismatch answers CRIU with failure instead, so CRIU
// kills the restored tasks and runc reports a failed restore; the mismatch
// itself goes to a file ferry-runc reports as the reason. Version and
// feature checks are answered from what CRIU answered before (see
// answer_identity); any other use of `criu` is the real CRIU, exec'd.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::runtime {

// The environment through which ferry-runc (and the node agent, for the
// runtime's checkpoints) configures the proxy (runc passes its environment
// on to CRIU).
inline constexpr const char* kProxyRealCriuEnv = "FERRY_CRIU_PROXY_REAL";
inline constexpr const char* kProxyVerifyDirEnv = "FERRY_CRIU_PROXY_VERIFY_DIR";
inline constexpr const char* kProxyVerifyFilesEnv =
    "FERRY_CRIU_PROXY_VERIFY_FILES";  // ':'-separated
inline constexpr const char* kProxyErrorFileEnv = "FERRY_CRIU_PROXY_ERROR_FILE";
inline constexpr const char* kProxyAnswersDirEnv = "FERRY_CRIU_PROXY_ANSWERS";

struct ProxyOptions {
  std::string real_criu;
  // Runs on its own thread during a restore; its error is written to
  // `error_file` and fails the restore. Empty: a restore is the real CRIU's.
  std::function<Status()> verify;
  std::string error_file;
  // Where the answers to VERSION and FEATURE_CHECK requests are kept (see
  // answer_identity). Empty: every request goes to the real CRIU.
  std::string answers_dir;
};

// Runs the proxy for `args` (the arguments after argv[0]) and returns the
// exit code (the real CRIU's, or 0 for an answer given from answers_dir).
int run_criu_proxy(const ProxyOptions& options, const std::vector<std::string>& args);

// Makes `dir` a proxy directory: `dir/criu` a symlink to `self` (ferry-runc's
// binary; a correct link is kept, so this is cheap after the first call)
// and `dir/answers` (0700) for kept answers. Returns the environment runc
// needs for its CRIU calls to go through the proxy: PATH with `dir` first,
// the real CRIU (`criu` as exec finds it in PATH, or as given when it has
// a slash; NotFound when it is not executable) and the answers directory.
Result<std::map<std::string, std::string>> prepare_criu_proxy(const std::string& dir,
                                                              const std::string& self,
                                                              const std::string& criu);

// PATH, or what exec uses without one.
std::string search_path();

// runc asks CRIU its version before every checkpoint and restore, and
// whether it can do lazy pages before every PostCopy dump: a CRIU process
// start each (~40 ms here, and the feature check also probes the kernel).
// The answer depends only on the CRIU binary and on the running kernel, so
// the proxy keeps CRIU's own answer, byte for byte, under this identity:
// the binary's path, device, inode, size and mtime, and the kernel's boot
// id. A different binary or a reboot is a different identity, so the
// next request goes to CRIU again. Only successful answers are kept.
Result<std::string> answer_identity(const std::string& real_criu);

}  // namespace ferry::runtime
