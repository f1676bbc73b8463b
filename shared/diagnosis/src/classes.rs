//! The vocabulary of a diagnosis: failure classes, severities and exit-code meanings, with the
//! tables that map Batch codes onto them. `docs/failure-classes.md` is the contract: classes are
//! added, never renamed, because users write policy rules against these strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How urgent a diagnosis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Nothing is wrong, or nothing yet.
    Info,
    /// Something needs a look but nothing is broken (a flaky task, a release failure).
    Warning,
    /// A task failed.
    Error,
    /// A job is stuck or ended.
    Critical,
}

impl Severity {
    /// The lowercase name used in JSON and policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }

    /// Parses a name, ignoring case.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Error, Self::Critical]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// Declares the class enum from one table: variant, wire name, severity, one-line meaning.
macro_rules! failure_classes {
    ($($variant:ident => $name:literal, $severity:ident, $meaning:literal;)+) => {
        /// A failure class (`docs/failure-classes.md`). Serialised as its dotted name, e.g. `task.exit_code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FailureClass {
            $(#[doc = $meaning] $variant,)+
        }

        impl FailureClass {
            /// Every class, in declaration order.
            pub const ALL: &'static [FailureClass] = &[$(FailureClass::$variant,)+];

            /// The dotted name, e.g. `task.exit_code`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)+ }
            }

            /// The severity every diagnosis of this class has.
            pub fn severity(self) -> Severity {
                match self { $(Self::$variant => Severity::$severity,)+ }
            }

            /// What the class means, in one line.
            pub fn meaning(self) -> &'static str {
                match self { $(Self::$variant => $meaning,)+ }
            }

            /// Parses a dotted name.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.as_str() == text)
            }
        }
    };
}

failure_classes! {
    TaskSucceeded => "task.succeeded", Info, "The task completed successfully.";
    TaskFlaky => "task.flaky", Warning, "The task succeeded, but only after Batch retried it.";
    TaskExitCode => "task.exit_code", Error, "The task's program exited with a non-zero code.";
    TaskCommandLaunch => "task.command_launch", Error, "Batch could not launch the task's command line.";
    TaskResourceFiles => "task.resource_files", Error, "The task's inputs (resource files, application packages) could not be put on the node.";
    TaskOutputUpload => "task.output_upload", Error, "The task's output files could not be uploaded.";
    TaskTimeout => "task.timeout", Error, "The task ran into its maxWallClockTime and was killed.";
    TaskTerminated => "task.terminated", Error, "The task was ended by Terminate Task, Terminate Job or Disable Job.";
    TaskContainer => "task.container", Error, "The task's container or mount could not be set up.";
    TaskPrepBlocked => "task.prep_blocked", Critical, "The task cannot run because the job preparation task failed on the node.";
    TaskRequeued => "task.requeued", Info, "The task was put back in the queue (preemption, node recovery or a requeue).";
    TaskInProgress => "task.in_progress", Info, "The task has not completed yet.";
    TaskUnknown => "task.unknown", Error, "The task failed in a way batch-triage does not recognise.";
    JobPrepFailed => "job.prep_failed", Critical, "The job preparation task failed on a node; the job may be stuck.";
    JobReleaseFailed => "job.release_failed", Warning, "The job release task failed on a node.";
    JobTimeout => "job.timeout", Critical, "The job ran into its maxWallClockTime and was terminated.";
    JobTerminatedByTask => "job.terminated_by_task", Critical, "A failed task's exit options terminated the job.";
    JobSchedulingError => "job.scheduling_error", Critical, "Batch could not schedule the job.";
    JobStuck => "job.stuck", Critical, "The job is active but its tasks are not progressing.";
    JobTerminated => "job.terminated", Info, "The job was terminated.";
    JobCompleted => "job.completed", Info, "The job completed.";
    JobInProgress => "job.in_progress", Info, "The job is active (or being disabled, enabled or terminated).";
    JobUnknown => "job.unknown", Info, "The job is in a state batch-triage does not recognise.";
    NodeStartTaskFailed => "node.start_task_failed", Error, "The pool's start task failed on a node.";
    PoolResizeFailed => "pool.resize_failed", Error, "The pool could not reach its target size (quota, capacity, an Azure Policy, a stopped resize).";
    PoolAutoScaleFailed => "pool.autoscale_failed", Error, "The pool's autoscale formula could not be evaluated.";
    PoolDeleteStuck => "pool.delete_stuck", Warning, "The pool has been deleting for longer than a deletion should take.";
    NodeUnusable => "node.unusable", Error, "A node is unusable: it cannot run tasks (its errors say why, or Batch lost contact).";
    DeliveryUnprocessable => "delivery.unprocessable", Error, "A delivery (an Event Hubs batch, a dead-lettered Event Grid event) kept failing; batch-triage keeps it in the store.";
}

impl FailureClass {
    /// Whether this class is a failure worth preserving logs and alerting for.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Self::TaskSucceeded
                | Self::TaskInProgress
                | Self::TaskRequeued
                | Self::JobCompleted
                | Self::JobInProgress
                | Self::JobUnknown
                | Self::JobTerminated
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares the exit-meaning enum from one table: variant, wire name, codes, a few words (for a
/// summary line), plain meaning, hint.
macro_rules! exit_meanings {
    ($($variant:ident => $name:literal, [$($code:literal),*], $short:literal, $meaning:literal, $hint:literal;)+) => {
        /// What an exit code usually means on a Batch node (`docs/failure-classes.md`, `docs/batch-facts.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ExitMeaning {
            $(#[doc = $meaning] $variant,)+
            /// Any other code: the application's own.
            Application,
        }

        impl ExitMeaning {
            /// The meaning of a non-zero exit code.
            pub fn of(code: i32) -> Self {
                match code {
                    $($($code)|* => Self::$variant,)+
                    _ => Self::Application,
                }
            }

            /// The snake_case name used in JSON and policy files.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)+ Self::Application => "application" }
            }

            /// What the code means in a few words, as a summary line quotes it after the code.
            pub fn short(self) -> &'static str {
                match self { $(Self::$variant => $short,)+ Self::Application => "application-defined" }
            }

            /// What the code means, in plain words.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)+
                    Self::Application => "an exit code defined by the application itself",
                }
            }

            /// What to do about it.
            pub fn hint(self) -> Option<&'static str> {
                match self { $(Self::$variant => Some($hint),)+ Self::Application => None }
            }

            /// Every meaning.
            pub const ALL: &'static [ExitMeaning] = &[$(Self::$variant,)+ Self::Application];

            /// Parses a snake_case name.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|m| m.as_str() == text)
            }
        }
    };
}

exit_meanings! {
    OomOrSigkill => "oom_or_sigkill", [137, -9],
        "killed by SIGKILL, most likely out of memory",
        "killed by SIGKILL, most often the Linux out-of-memory killer (or a container memory limit)",
        "The process was killed with SIGKILL, which on Batch nodes is almost always the out-of-memory killer. Check the node's memory use (dmesg shows 'Out of memory: Killed process'), run fewer tasks per node (taskSlotsPerNode / requiredSlots), raise the container memory limit, or move the pool to a VM size with more memory.";
    CommandNotFound => "command_not_found", [127],
        "command not found",
        "the shell could not find the command",
        "A shell reported 'command not found'. Use an absolute path or check PATH on the node: application packages are only reachable through $AZ_BATCH_APP_PACKAGE_<id>_<version>, and tools installed by the start task must be installed for the task's user.";
    NotExecutable => "not_executable", [126],
        "not executable",
        "the command was found but could not be executed",
        "The command was found but is not executable: set the execute bit (resource file fileMode, or chmod in the command), check the script has Unix line endings (a script saved with CRLF fails this way) and that it was built for the node's architecture.";
    Segfault => "segfault", [139],
        "segmentation fault",
        "the process crashed with a segmentation fault (SIGSEGV)",
        "The program crashed (SIGSEGV). Look at stderr.txt for the crash site; native libraries built for another OS image or CPU, and stack exhaustion, are the usual causes on Batch.";
    Sigterm => "sigterm", [143],
        "stopped by SIGTERM",
        "the process was stopped with SIGTERM",
        "The process received SIGTERM: something asked it to stop (a container runtime, the task being terminated, or the node shutting down). Check the job and node for a terminate or a pool resize at that time.";
    CtrlCExit => "ctrl_c_exit", [-1073741510],
        "killed by Batch",
        "STATUS_CONTROL_C_EXIT (0xC000013A): Batch killed the process, at maxWallClockTime or on a terminate",
        "Batch ended the process (0xC000013A). If the task hit constraints.maxWallClockTime, raise it or split the work; otherwise find who terminated the task or job.";
    AccessViolation => "access_violation", [-1073741819],
        "access violation",
        "STATUS_ACCESS_VIOLATION (0xC0000005): a native crash on Windows",
        "The program crashed with an access violation (0xC0000005). Check stderr.txt and any crash dump; a native dependency built for another platform is a common cause.";
    DllNotFound => "dll_not_found", [-1073741515],
        "DLL not found",
        "STATUS_DLL_NOT_FOUND (0xC0000135): a DLL the program needs is missing on the node",
        "A DLL the program needs is missing (0xC0000135), most often the Visual C++ redistributable or a .NET runtime. Install it in the pool's start task or bake it into the custom image.";
    StackBufferOverrun => "stack_buffer_overrun", [-1073740791],
        "stack buffer overrun",
        "STATUS_STACK_BUFFER_OVERRUN (0xC0000409): the program failed fast",
        "The program failed fast (0xC0000409), which is how the C runtime ends on a detected corruption or an unhandled C++ exception. stderr.txt and the Windows event log on the node say more.";
    DotnetUnhandledException => "dotnet_unhandled_exception", [-532462766],
        "unhandled .NET exception",
        "0xE0434352: an unhandled .NET exception",
        "An unhandled .NET exception ended the program (0xE0434352). The exception and its stack trace are in stderr.txt.";
    FileNotFound => "file_not_found", [-2147024894],
        "file not found",
        "0x80070002 (ERROR_FILE_NOT_FOUND as an HRESULT): a file the program needs was not found",
        "A file was not found (0x80070002). Check that resource files landed where the program looks for them (relative to the working directory `wd`) and that paths use the node OS's separator.";
}

impl fmt::Display for ExitMeaning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Negative exit codes shown the way Windows tools print them: `0xC0000005`.
pub fn exit_code_hex(code: i32) -> Option<String> {
    (code < 0).then(|| format!("0x{:08X}", code as u32))
}

/// Task failure codes → class. Patterns are matched case-insensitively; `*` matches any run of
/// characters. The first match wins, so specific entries go first. Adding a code is one line.
pub const TASK_FAILURE_CODES: &[(&str, FailureClass)] = &[
    ("FailureExitCode", FailureClass::TaskExitCode),
    // Refined into task.timeout or task.terminated by the task's times and maxWallClockTime.
    ("TaskEnded", FailureClass::TaskTerminated),
    ("CommandProgramNotFound", FailureClass::TaskCommandLaunch),
    ("CommandLaunchFailed", FailureClass::TaskCommandLaunch),
    ("BadCommandType", FailureClass::TaskCommandLaunch),
    ("Blob*", FailureClass::TaskResourceFiles),
    ("ResourceContainer*", FailureClass::TaskResourceFiles),
    ("Resource*Failed", FailureClass::TaskResourceFiles),
    ("DiskFull", FailureClass::TaskResourceFiles),
    ("ApplicationPackage*", FailureClass::TaskResourceFiles),
    ("FileUpload*", FailureClass::TaskOutputUpload),
    ("Container*", FailureClass::TaskContainer),
    ("MountConfigurationError", FailureClass::TaskContainer),
    ("JobPreparationTaskFailed", FailureClass::TaskPrepBlocked),
];

/// The class for a task failure code, if the code is known.
pub fn task_class_for_code(code: &str) -> Option<FailureClass> {
    TASK_FAILURE_CODES
        .iter()
        .find(|(pattern, _)| code_matches(pattern, code))
        .map(|(_, class)| *class)
}

/// Whether a failure code is a pre-processing error in the exitConditions sense: the task could
/// not start (inputs, command launch, container).
pub fn is_pre_processing_class(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::TaskResourceFiles
            | FailureClass::TaskCommandLaunch
            | FailureClass::TaskContainer
    )
}

/// Matches `code` against `pattern`, where `*` matches any run of characters; ASCII case is
/// ignored.
pub fn code_matches(pattern: &str, code: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let code = code.to_ascii_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = code.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Cause and advice for specific failure codes. Codes not listed get the class's generic text.
pub const FAILURE_CODE_ADVICE: &[(&str, &str, &str)] = &[
    (
        "BlobAccessDenied",
        "A resource file could not be downloaded: access was denied.",
        "The SAS token on the resource file URL has expired or lacks read permission, or the identity on the pool lacks 'Storage Blob Data Reader'. Issue SAS tokens that outlive the time tasks wait in the queue, or use a managed identity reference.",
    ),
    (
        "BlobNotFound",
        "A resource file does not exist at the URL given.",
        "Check the blob path and blobPrefix of the task's resource files (names are case-sensitive), and that the upload finished before the task was added.",
    ),
    (
        "BlobDownloadTimedOut",
        "Downloading a resource file timed out.",
        "Large inputs are better fetched once per node by the job preparation task, or staged with a pool start task; check the storage account is in the pool's region.",
    ),
    (
        "BlobDownloadMiscError",
        "Downloading a resource file failed with an unexpected error.",
        "Retry the task (pre-processing errors are not retried automatically) and check the storage account's availability and firewall (the pool's subnet must be allowed).",
    ),
    (
        "ResourceContainerAccessDenied",
        "The storage container of a resource file could not be listed: access denied.",
        "The container SAS needs read and list permissions, or the pool identity needs 'Storage Blob Data Reader' on the container.",
    ),
    (
        "ResourceContainerNotFound",
        "The storage container of a resource file does not exist.",
        "Check storageContainerUrl / autoStorageContainerName of the task's resource files.",
    ),
    (
        "DiskFull",
        "The node ran out of disk space while preparing the task.",
        "Free space on the node (shorter retentionTime so old task directories are cleaned up), or choose a VM size with a larger temporary disk.",
    ),
    (
        "ApplicationPackageError",
        "An application package could not be deployed to the node.",
        "Check the package id and version exist in the Batch account and that the pool references them.",
    ),
    (
        "CommandProgramNotFound",
        "The program named at the start of the command line does not exist on the node.",
        "Batch runs the command line directly, not through a shell. Use the full path of the program, reference application packages through their environment variable inside a shell, and check that the start task installed what the command needs.",
    ),
    (
        "CommandLaunchFailed",
        "Batch could not launch the command line.",
        "Check the program is executable for the task's user identity and built for the node's OS and architecture.",
    ),
    (
        "FileUploadAccessDenied",
        "The task's output files could not be uploaded: access was denied.",
        "The containerUrl SAS of the output files has expired or lacks write permission (or the identity lacks 'Storage Blob Data Contributor'). fileuploaderr.txt in the task directory names the file and the error.",
    ),
    (
        "FileUploadContainerNotFound",
        "The container for the task's output files does not exist.",
        "Create the container before adding tasks; fileuploaderr.txt names the destination that failed.",
    ),
    (
        "FileUploadMiscError",
        "Uploading the task's output files failed with an unexpected error.",
        "Read fileuploaderr.txt (and fileuploadout.txt) in the task directory: it has the real error, often an expired SAS or a file pattern that matched nothing. The application itself may have succeeded.",
    ),
    (
        "ContainerInvalidImage",
        "The container image is invalid or cannot be pulled.",
        "Check the image name and tag, that the registry credentials on the pool can pull it, and that the image's architecture matches the node (an arm64 image fails on amd64 nodes).",
    ),
    (
        "ContainerInvalidRegistry",
        "The container registry settings are invalid.",
        "Check registryServer, user name and password or identity reference of the task's container settings.",
    ),
    (
        "ContainerInvalidSettings",
        "The task's container settings are invalid.",
        "Check containerRunOptions and workingDirectory of the task's container settings.",
    ),
    (
        "MountConfigurationError",
        "A file system mount of the pool could not be set up.",
        "Check the pool's mountConfiguration (credentials, network access to the share) and the node's agent logs.",
    ),
    (
        "JobPreparationTaskFailed",
        "The task cannot run on its node because the job preparation task failed there.",
        "Fix the job preparation task: its stderr.txt on the node says why it failed. The node is excluded for this job until it is reimaged or the job ends.",
    ),
];

/// Specific cause and advice for a failure code, if any.
pub fn advice_for_code(code: &str) -> Option<(&'static str, &'static str)> {
    FAILURE_CODE_ADVICE
        .iter()
        .find(|(known, _, _)| known.eq_ignore_ascii_case(code))
        .map(|(_, cause, hint)| (*cause, *hint))
}

/// Advice for job scheduling error codes (`docs/batch-facts.md`).
pub const JOB_SCHEDULING_ADVICE: &[(&str, &str)] = &[
    (
        "AutoPoolCreationFailedWithQuotaReached",
        "The account's core or pool quota is reached: request a quota increase, or free capacity by deleting idle pools.",
    ),
    (
        "InvalidApplicationPackageReferencesInAutoPool",
        "The auto pool names an application package that does not exist: check ids and versions.",
    ),
    (
        "InvalidAutoScaleFormulaInAutoPool",
        "The auto pool's autoscale formula is invalid: evaluate it with the Evaluate Autoscale API.",
    ),
    (
        "InvalidCertificatesInAutoPool",
        "The auto pool references certificates that are missing or invalid.",
    ),
    (
        "InvalidAutoPoolSettings",
        "The auto pool specification is invalid: check VM size, image and network settings.",
    ),
    (
        "JobBeingTerminated",
        "The job is being terminated; nothing more will be scheduled.",
    ),
];

/// Resize error codes (`resizeErrors[].code`, `PoolResizeCompleteEvent.resultCode`) → cause and
/// advice. Patterns as in [`TASK_FAILURE_CODES`] (case-insensitive, `*` for any run); the first
/// match wins. Codes not listed get the generic resize text and Batch's own message.
/// `AllocationFailed` is refined further by the relayed provider error ([`ALLOCATION_CAUSES`]).
pub const POOL_RESIZE_ADVICE: &[(&str, &str, &str)] = &[
    (
        "AccountCoreQuotaReached",
        "The Batch account's dedicated vCPU quota is reached.",
        "Request more dedicated vCPUs for the Batch account (Azure portal: the Batch account, Quotas, Request quota increase; or a support request of type Service and subscription limits, Batch), use low-priority/Spot nodes, or free quota by shrinking or deleting other pools of the account.",
    ),
    (
        "AccountLowPriorityCoreQuotaReached",
        "The Batch account's low-priority (Spot) vCPU quota is reached.",
        "Request more low-priority vCPUs for the Batch account (Azure portal: the Batch account, Quotas, Request quota increase), use dedicated nodes, or shrink other pools' low-priority nodes.",
    ),
    (
        "AccountSpotCoreQuotaReached",
        "The Batch account's Spot vCPU quota is reached.",
        "Request more Spot vCPUs for the Batch account (Azure portal: the Batch account, Quotas, Request quota increase), use dedicated nodes, or shrink other pools' Spot nodes.",
    ),
    (
        "AccountVMSeriesCoreQuotaReached",
        "The Batch account's dedicated vCPU quota for this VM series is reached (a per-family limit besides the total).",
        "Request more vCPUs for this VM family on the Batch account (Azure portal: the Batch account, Quotas, filter by the VM series, Request quota increase), or choose a VM size from a family with quota left.",
    ),
    (
        "AllocationFailed",
        "Azure could not allocate the nodes; the reason is relayed from the compute provider.",
        "Read the reason Batch relays from the compute provider (in the cause, and in the values of the pool's resize error): it names the obstacle; an internal error is transient, so resize again.",
    ),
    (
        "AllocationTimedOut",
        "The nodes were not allocated within the pool's resizeTimeout.",
        "Resize again, or raise resizeTimeout (default 15 minutes) for large pools; capacity in the region may be short. A resize error stays until the next resize, so on an idle autoscale pool it can be old.",
    ),
    (
        "ResizeStopped",
        "The resize was stopped by a Stop Resize request (a user or a tool) before the pool reached its target.",
        "Nothing is broken: resize the pool again if the nodes are still wanted.",
    ),
    (
        "RemoveNodesFailed",
        "Removing nodes from the pool failed.",
        "Retry the Remove Nodes call or resize again; nodes that run tasks are removed according to nodeDeallocationOption.",
    ),
    (
        "Operations*RestrictedByPolicy",
        "An Azure Policy assignment blocked an operation Batch needed to grow the pool.",
        "Find the policy assignment that denies it (Azure portal: Policy, Compliance, or the subscription's activity log) and exempt the Batch resources or change the pool's configuration to comply.",
    ),
    (
        "CommunicationEnabledPoolReachedMaxVMCount",
        "A pool with inter-node communication cannot grow past its maximum node count.",
        "Lower the target, or turn off enableInterNodeCommunication if the tasks do not need it.",
    ),
    (
        "OverconstrainedAllocationRequestError",
        "No capacity matches all of the pool's constraints (VM size, zones, placement).",
        "Relax the constraints: another VM size, no zone pinning, or another region.",
    ),
    (
        "IncompatibleVMSize",
        "The VM size does not fit the pool's image or configuration.",
        "Choose a VM size the image supports (generation, architecture, features).",
    ),
    (
        "UnsupportedVMSize",
        "The VM size is not supported for Batch pools in this region.",
        "Choose another VM size (the Batch account's supported VM SKUs list them).",
    ),
    (
        "MissingPublisherPropertyInMarketPlacePlan",
        "The marketplace image's plan is missing or not accepted.",
        "Accept the image's marketplace terms for the subscription and check the image reference.",
    ),
    (
        "FailedIdentityOperation",
        "Assigning the pool's managed identity to the nodes failed.",
        "Check the user-assigned identity still exists and Batch may use it.",
    ),
    (
        "DiskEncryptionFailure",
        "Disk encryption could not be set up on the nodes.",
        "Check the pool's diskEncryptionConfiguration and the VM size's support for it.",
    ),
    (
        "DependentResourceNotFound",
        "A resource the pool depends on (subnet, image, identity) does not exist.",
        "Check the pool's subnet, image and identity references.",
    ),
];

/// What the relayed provider error of an `AllocationFailed` means: a case-insensitive
/// fragment of its `Reason`, its provider code or its provider message → a short name, the cause,
/// the advice. The first match wins.
pub const ALLOCATION_CAUSES: &[(&str, &str, &str, &str)] = &[
    (
        "insufficient capacity",
        "capacity",
        "The region has no capacity left for this VM size right now.",
        "Retry later, or choose another VM size or region; Spot capacity and dedicated capacity differ, so the other kind may be available.",
    ),
    (
        "delegation",
        "subnet_delegation",
        "The pool's subnet is delegated to another service, and Batch cannot place nodes in it.",
        "Remove the delegation from the subnet, or give the pool a subnet without delegation.",
    ),
    (
        "key vault",
        "key_vault_permission",
        "Batch is not authorized to access the Key Vault of the account (user subscription mode).",
        "Grant the Microsoft Azure Batch service principal Get, List, Set and Delete secret permissions on the Key Vault (access policy or the Key Vault Secrets Officer role), and check the vault's firewall.",
    ),
    (
        "hypervisor generation",
        "hyperv_generation",
        "The VM size cannot boot the image's Hyper-V generation (a Gen2 image on a Gen1-only size, or the reverse).",
        "Choose a VM size that supports the image's generation, or an image of the generation the size supports.",
    ),
    (
        "desired permissions",
        "batch_permission",
        "The Batch service lacks the permissions it needs in the subscription (user subscription mode).",
        "Give Microsoft Azure Batch the Contributor or Owner role on the subscription (or the custom role it needs), and check the Microsoft.Batch resource provider is registered.",
    ),
    (
        "quota",
        "subscription_quota",
        "A subscription quota (vCPUs, public IPs, or another resource) is exhausted.",
        "Raise the subscription's quota for the resource named in the provider's message, or free some.",
    ),
    (
        "internal error",
        "transient",
        "Azure reported an internal error while allocating the nodes; this is usually transient.",
        "Resize again; if it keeps failing, open a support request with the pool id and the time.",
    ),
    (
        "InternalServerError",
        "transient",
        "Azure reported an internal error while allocating the nodes; this is usually transient.",
        "Resize again; if it keeps failing, open a support request with the pool id and the time.",
    ),
    (
        "NetworkingInternalOperationError",
        "transient",
        "Azure networking reported an internal error while allocating the nodes; this is usually transient.",
        "Resize again; if it keeps failing, open a support request with the pool id and the time.",
    ),
];

/// Autoscale error codes (`autoScaleRun.error.code`) → cause and advice.
pub const AUTOSCALE_ADVICE: &[(&str, &str, &str)] = &[
    (
        "AutoScalingFormulaEvaluationError",
        "The autoscale formula has an evaluation error (an undefined symbol, a type error).",
        "Fix the formula at the line and column given below; test it with the Evaluate Autoscale API (az batch pool autoscale evaluate) before enabling it.",
    ),
    (
        "InsufficientSampleData",
        "The formula asked for more samples of a metric than Batch has.",
        "Guard the formula with $Metric.GetSamplePercent(interval) and a fallback, or ask for a shorter interval or a lower percentage.",
    ),
    (
        "AutoScal*FormulaSyntaxError",
        "The autoscale formula does not parse.",
        "Fix the syntax at the position given; test the formula with the Evaluate Autoscale API.",
    ),
];

/// Node error codes (`errors[].code` of an `unusable` node) → cause, advice, and whether Batch
/// recovers the node by itself. Patterns as in [`TASK_FAILURE_CODES`].
pub const NODE_ERROR_ADVICE: &[(&str, &str, &str, bool)] = &[
    (
        "DiskFull",
        "The node's disk (temporary or OS disk) is full.",
        "Free space: delete old jobs or tasks (their directories stay for retentionTime, 7 days by default, so shorten it), or choose a VM size with a larger temporary disk; then reboot or reimage the node. Keep the node agent logs first if support should look.",
        false,
    ),
    (
        "ApplicationPackage*",
        "An application package of the pool could not be downloaded or installed on the node.",
        "Check the package id and version exist in the Batch account and are referenced correctly by the pool, and that the node can reach the account's storage; Batch does not recover the node by itself: reimage it or remove it once fixed.",
        false,
    ),
    (
        "Container*",
        "The pool's container images could not be pulled onto the node.",
        "Check the image names, tags and registry credentials of the pool's containerConfiguration, and that the node can reach the registry; Batch does not recover the node by itself: reimage it or remove it once fixed.",
        false,
    ),
    (
        "*Download*",
        "Something the node needs could not be downloaded.",
        "Check the node's outbound access (storage, registry, DNS) from the pool's subnet; Batch does not recover the node by itself: reimage it or remove it once fixed.",
        false,
    ),
    (
        "BatchAgentInstallationFailure",
        "The Batch node agent could not be installed on the VM.",
        "Check the image is supported by Batch (a custom image must not be generalised wrongly), and that the subnet allows Batch's ports and outbound access; remove the node, and recreate the pool if it keeps happening.",
        false,
    ),
];

/// The advice for a resize error code, if the code is known.
pub fn resize_advice(code: &str) -> Option<(&'static str, &'static str)> {
    POOL_RESIZE_ADVICE
        .iter()
        .find(|(pattern, _, _)| code_matches(pattern, code))
        .map(|(_, cause, hint)| (*cause, *hint))
}

/// The advice for an autoscale error code, if the code is known.
pub fn autoscale_advice(code: &str) -> Option<(&'static str, &'static str)> {
    AUTOSCALE_ADVICE
        .iter()
        .find(|(pattern, _, _)| code_matches(pattern, code))
        .map(|(_, cause, hint)| (*cause, *hint))
}

/// The advice for a node error code, if the code is known: cause, hint, whether Batch recovers
/// the node by itself.
pub fn node_error_advice(code: &str) -> Option<(&'static str, &'static str, bool)> {
    NODE_ERROR_ADVICE
        .iter()
        .find(|(pattern, _, _, _)| code_matches(pattern, code))
        .map(|(_, cause, hint, recovers)| (*cause, *hint, *recovers))
}

/// Whether a resize error code is one of the account quota codes.
pub fn is_quota_code(code: &str) -> bool {
    code_matches("Account*CoreQuotaReached", code)
}

/// Serialises any `as_str` type as a string.
macro_rules! string_serde {
    ($ty:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$ty>::parse(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown {} {text:?}", $what)))
            }
        }
    };
}
string_serde!(FailureClass, "failure class");
string_serde!(Severity, "severity");
string_serde!(ExitMeaning, "exit meaning");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_patterns() {
        assert!(code_matches("Blob*", "BlobAccessDenied"));
        assert!(code_matches("blob*", "BLOBNOTFOUND"));
        assert!(code_matches("Resource*Failed", "ResourceFileWriteFailed"));
        assert!(!code_matches(
            "Resource*Failed",
            "ResourceContainerNotFound"
        ));
        assert!(code_matches("DiskFull", "diskfull"));
        assert!(!code_matches("DiskFull", "DiskFullish"));
        assert_eq!(
            task_class_for_code("ResourceContainerListTimedOut"),
            Some(FailureClass::TaskResourceFiles)
        );
        assert_eq!(
            task_class_for_code("FileUploadConflict"),
            Some(FailureClass::TaskOutputUpload)
        );
        assert_eq!(
            task_class_for_code("ContainerMiscError"),
            Some(FailureClass::TaskContainer)
        );
        assert_eq!(task_class_for_code("SomethingNew"), None);
    }

    #[test]
    fn pool_and_node_codes_in_any_casing() {
        // Java and the old .NET compare against `AllocationTimedout`, the new .NET has
        // `AllocationTimedOut`: both are the same code.
        for code in [
            "AllocationTimedout",
            "AllocationTimedOut",
            "ALLOCATIONTIMEDOUT",
        ] {
            assert!(
                resize_advice(code).unwrap().0.contains("resizeTimeout"),
                "{code}"
            );
        }
        assert!(
            resize_advice("accountcorequotareached")
                .unwrap()
                .0
                .contains("dedicated")
        );
        assert!(
            resize_advice("AccountVMSeriesCoreQuotaReached")
                .unwrap()
                .0
                .contains("VM series")
        );
        assert!(is_quota_code("AccountLowPriorityCoreQuotaReached"));
        assert!(is_quota_code("AccountSpotCoreQuotaReached"));
        assert!(!is_quota_code("AllocationFailed"));
        for code in [
            "OperationsRestrictedByPolicy",
            "OperationsOnPublicIPRestrictedByPolicy",
            "operationsonprivateendpointrestrictedbypolicy",
        ] {
            assert!(resize_advice(code).unwrap().0.contains("Policy"), "{code}");
        }
        assert_eq!(resize_advice("SomethingNew"), None);
        assert!(!node_error_advice("DiskFull").unwrap().2);
        assert!(node_error_advice("ApplicationPackageError").is_some());
        assert!(node_error_advice("ContainerImageDownloadFailed").is_some());
        assert_eq!(node_error_advice("NodeWentAway"), None);
        assert!(autoscale_advice("autoscalingformulaevaluationerror").is_some());
    }

    #[test]
    fn every_exit_meaning_and_hex() {
        let table = [
            (137, "oom_or_sigkill"),
            (-9, "oom_or_sigkill"),
            (127, "command_not_found"),
            (126, "not_executable"),
            (139, "segfault"),
            (143, "sigterm"),
            (-1073741510, "ctrl_c_exit"),
            (-1073741819, "access_violation"),
            (-1073741515, "dll_not_found"),
            (-1073740791, "stack_buffer_overrun"),
            (-532462766, "dotnet_unhandled_exception"),
            (-2147024894, "file_not_found"),
            (1, "application"),
            (2, "application"),
        ];
        for (code, name) in table {
            assert_eq!(ExitMeaning::of(code).as_str(), name, "exit code {code}");
        }
        assert_eq!(exit_code_hex(-1073741819).as_deref(), Some("0xC0000005"));
        assert_eq!(exit_code_hex(-1073741510).as_deref(), Some("0xC000013A"));
        assert_eq!(exit_code_hex(-532462766).as_deref(), Some("0xE0434352"));
        assert_eq!(exit_code_hex(137), None);
    }

    #[test]
    fn class_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for class in FailureClass::ALL {
            assert!(seen.insert(class.as_str()), "duplicate {class}");
            assert_eq!(FailureClass::parse(class.as_str()), Some(*class));
        }
    }
}
