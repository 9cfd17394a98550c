// Annotation keys shared by the operator, the agent and ferry-runc, in one
// place so the three cannot disagree. Ferry's own keys live under ferry.dev/;
// the io.kubernetes.cri.* keys are the ones containerd's CRI plugin puts in
// every container's OCI spec; org.criu.config is the key runc reads to find
// a CRIU configuration file for checkpoint and restore.
#pragma once

namespace ferry::api {

// On a pod (and, through containerd's pod_annotations, in its OCI specs):
// the UID of the Migration whose snapshot this pod's containers restore from.
inline constexpr const char* kRestoreFromAnnotation = "ferry.dev/restore-from";

// In OCI specs, set by containerd's CRI plugin.
inline constexpr const char* kCriContainerType = "io.kubernetes.cri.container-type";
inline constexpr const char* kCriContainerName = "io.kubernetes.cri.container-name";
inline constexpr const char* kCriSandboxNamespace = "io.kubernetes.cri.sandbox-namespace";
inline constexpr const char* kCriSandboxName = "io.kubernetes.cri.sandbox-name";
inline constexpr const char* kCriSandboxUid = "io.kubernetes.cri.sandbox-uid";

// Read by runc: path of the CRIU configuration file for this container.
inline constexpr const char* kCriuConfigAnnotation = "org.criu.config";

}  // namespace ferry::api
