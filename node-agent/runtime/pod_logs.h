// Where kubelet keeps a container's log: <root>/<namespace>_<pod>_<uid>/
// <container>/<restart>.log (the CRI log path it hands the runtime). The
// source agent reads the current file to carry it with the snapshot; the
// restoring ferry-runc writes it ahead of the new container's output.
#pragma once

#include <string>

namespace ferry::runtime {

// The container's current log file (the newest *.log), or "" when there is
// none.
std::string current_container_log(const std::string& pod_log_root, const std::string& ns,
                                  const std::string& pod, const std::string& pod_uid,
                                  const std::string& container);

}  // namespace ferry::runtime
