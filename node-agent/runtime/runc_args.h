// Parses an OCI runtime command line the way runc reads it, so ferry-runc
// can tell which call it is wrapping without changing a single argument of
// the calls it passes through. containerd's runc shim (go-runc) and CRI-O
// call `runc [global flags] <command> [command flags] <container-id>`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "status/status.h"

namespace ferry::runtime {

struct RuncArgs {
  std::vector<std::string> global_flags;  // verbatim, e.g. {"--root", "/run/x", "--log", ...}
  std::string root;                       // value of --root, if given
  std::string log;                        // value of --log, if given
  std::string log_format;                 // value of --log-format, if given
  std::string command;                    // create, start, state, kill, delete, ...
  std::vector<std::string> command_args;  // verbatim, after the command
  std::string container_id;               // the last positional of the command
  // Parsed `create`/`run` flags.
  std::string bundle = ".";
  std::string pid_file;
  std::string console_socket;
};

Result<RuncArgs> parse_runc_args(const std::vector<std::string>& argv_without_program);

}  // namespace ferry::runtime
