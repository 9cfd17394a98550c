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

// On a replacement pod: set by the operator once the snapshot is published.
// Changing an annotation makes kubelet sync the pod at once, so its next
// container create (the restore) does not wait out kubelet's error backoff.
inline constexpr const char* kSnapshotReadyAnnotation = "ferry.dev/snapshot-ready";
// On a replacement pod: the name of the Migration it belongs to.
inline constexpr const char* kMigrationAnnotation = "ferry.dev/migration";

// On a pod (usually through its owner's template): opts it in. The
// admission webhook gives such pods the ferry RuntimeClass and the serving
// readiness gate, and marks the replacement their owner creates during a
// Migration for restore. Owned pods can only migrate with it.
inline constexpr const char* kMigratableLabel = "ferry.dev/migratable";

// The pod readiness gate (condition type) through which Ferry takes a pod
// out of its Services' endpoints while it is frozen, and lets a restored
// pod in once its restore succeeded (DESIGN.md §3 step 7).
inline constexpr const char* kServingCondition = "ferry.dev/serving";

// On a Migration: the nodes whose agents act on it (agents watch by label).
inline constexpr const char* kSourceNodeLabel = "ferry.dev/source-node";
inline constexpr const char* kTargetNodeLabel = "ferry.dev/target-node";
// On a Migration: held by the source agent while it holds a frozen
// container or a snapshot of it, so deleting the Migration cleans both up.
inline constexpr const char* kSnapshotFinalizer = "ferry.dev/snapshot";

// On a Migration: held by the operator from admission until the Migration
// is final, so deleting it mid-flight rolls back (the replacement pod is
// deleted before the source thaws) instead of leaving a replacement behind.
inline constexpr const char* kOperatorFinalizer = "ferry.dev/operator";

// On a Node: what its agent reported (JSON, see node-agent/report).
inline constexpr const char* kAgentReportAnnotation = "ferry.dev/agent";

// In OCI specs, set by containerd's CRI plugin.
inline constexpr const char* kCriContainerType = "io.kubernetes.cri.container-type";
inline constexpr const char* kCriContainerName = "io.kubernetes.cri.container-name";
inline constexpr const char* kCriSandboxNamespace = "io.kubernetes.cri.sandbox-namespace";
inline constexpr const char* kCriSandboxName = "io.kubernetes.cri.sandbox-name";
inline constexpr const char* kCriSandboxUid = "io.kubernetes.cri.sandbox-uid";

// Read by runc: path of the CRIU configuration file for this container.
inline constexpr const char* kCriuConfigAnnotation = "org.criu.config";

}  // namespace ferry::api
