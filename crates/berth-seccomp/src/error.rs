//! The one error type of this crate.
//!
//! Validation errors name the offending field of `config.json` as a path
//! (`linux.seccomp.syscalls[2].args[0].index`) together with the bad value, so
//! that the message alone tells the user what to fix. Errors that come from
//! libseccomp or the kernel say what was being done and keep the underlying
//! error as their `source`.

use std::io;

use thiserror::Error;

/// An error from validating, compiling or loading a seccomp filter.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// A `syscalls[]` entry has an empty `names` list.
    #[error("{field} must contain at least one syscall name")]
    EmptyNames {
        /// Path of the `names` field, e.g. `linux.seccomp.syscalls[3].names`.
        field: String,
    },

    /// A syscall name that the linked libseccomp does not know on any
    /// architecture.
    #[error("unknown syscall {name:?} in {field}")]
    UnknownSyscall {
        /// Path of the `syscalls[]` entry, e.g. `linux.seccomp.syscalls[3]`.
        field: String,
        /// The name as written in the configuration.
        name: String,
    },

    /// `errnoRet` or `defaultErrnoRet` given with an action that returns no
    /// errno (the runtime spec requires an error here).
    #[error("{field} is set, but {action} does not return an errno")]
    ErrnoRetNotAllowed {
        /// Path of the errno field.
        field: String,
        /// The action it was given with.
        action: &'static str,
    },

    /// An errno value the kernel or libseccomp cannot encode.
    #[error("{field} is {value}, but {action} accepts at most {max}")]
    ErrnoRetOutOfRange {
        /// Path of the errno field.
        field: String,
        /// The action it was given with.
        action: &'static str,
        /// The value as written in the configuration.
        value: u32,
        /// The largest value accepted for this action.
        max: u32,
    },

    /// An argument index beyond the six arguments a syscall can have.
    #[error("{field} is {index}, but syscall arguments are numbered 0 to 5")]
    ArgIndexOutOfRange {
        /// Path of the `index` field, e.g. `linux.seccomp.syscalls[2].args[0].index`.
        field: String,
        /// The index as written in the configuration.
        index: usize,
    },

    /// `defaultAction` is `SCMP_ACT_NOTIFY`: the runtime itself could not run
    /// a single syscall after loading the filter (runc rejects it too).
    #[error("linux.seccomp.defaultAction cannot be SCMP_ACT_NOTIFY")]
    NotifyAsDefaultAction,

    /// `SCMP_ACT_NOTIFY` on `write`, which the runtime needs to hand the
    /// notify fd over after loading the filter (runc rejects it too).
    #[error("{field}: SCMP_ACT_NOTIFY cannot be used for the write syscall")]
    NotifyOnWrite {
        /// Path of the `syscalls[]` entry.
        field: String,
    },

    /// `SCMP_ACT_NOTIFY` is used, but there is no agent to send the fd to.
    #[error("{field} uses SCMP_ACT_NOTIFY, but linux.seccomp.listenerPath is not set")]
    NotifyWithoutListener {
        /// Path of the first `syscalls[]` entry that uses `SCMP_ACT_NOTIFY`.
        field: String,
    },

    /// `listenerMetadata` without `listenerPath` (forbidden by the runtime spec).
    #[error("linux.seccomp.listenerMetadata is set, but linux.seccomp.listenerPath is not")]
    MetadataWithoutListener,

    /// An action that the linked libseccomp or the running kernel cannot apply.
    #[error(
        "{field}: {action} is not supported by libseccomp {version} on this kernel \
         (API level {api_level})"
    )]
    UnsupportedAction {
        /// Path of the action field.
        field: String,
        /// The action name.
        action: &'static str,
        /// Version of the linked libseccomp, `major.minor.micro`.
        version: String,
        /// API level reported by libseccomp for this kernel.
        api_level: u32,
    },

    /// An architecture that the linked libseccomp does not know.
    #[error("{field}: {arch} is not supported by libseccomp {version}")]
    UnsupportedArch {
        /// Path of the entry, e.g. `linux.seccomp.architectures[1]`.
        field: String,
        /// The architecture name.
        arch: &'static str,
        /// Version of the linked libseccomp, `major.minor.micro`.
        version: String,
    },

    /// An architecture that cannot share one BPF program with the native one,
    /// such as a big-endian architecture on a little-endian host.
    #[error("{field}: {arch} cannot be filtered together with the native architecture")]
    IncompatibleArch {
        /// Path of the entry, e.g. `linux.seccomp.architectures[1]`.
        field: String,
        /// The architecture name.
        arch: &'static str,
    },

    /// A filter flag that the linked libseccomp or the running kernel cannot set.
    #[error("{field}: {flag} is not supported by this libseccomp and kernel")]
    UnsupportedFlag {
        /// Path of the entry, e.g. `linux.seccomp.flags[0]`.
        field: String,
        /// The flag name.
        flag: &'static str,
        /// What libseccomp said.
        #[source]
        source: libseccomp::error::SeccompError,
    },

    /// `SECCOMP_FILTER_FLAG_TSYNC` together with `SCMP_ACT_NOTIFY` needs
    /// `SECCOMP_FILTER_FLAG_TSYNC_ESRCH` (Linux 5.7, libseccomp API level 6).
    #[error(
        "{field}: SECCOMP_FILTER_FLAG_TSYNC cannot be combined with SCMP_ACT_NOTIFY on this \
         kernel and libseccomp (API level {api_level}, 6 needed)"
    )]
    TsyncWithNotify {
        /// Path of the TSYNC entry in `linux.seccomp.flags`.
        field: String,
        /// API level reported by libseccomp for this kernel.
        api_level: u32,
    },

    /// The generated program is longer than the kernel accepts.
    #[error(
        "the seccomp filter compiles to {len} BPF instructions, the kernel accepts at most {max}"
    )]
    ProgramTooLong {
        /// Number of instructions generated.
        len: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },

    /// A libseccomp call failed.
    #[error("libseccomp failed to {action}")]
    Libseccomp {
        /// What was being done, e.g. `add the rule for "uname" from linux.seccomp.syscalls[2]`.
        action: String,
        /// What libseccomp said.
        #[source]
        source: libseccomp::error::SeccompError,
    },

    /// An I/O step of exporting the BPF program from libseccomp failed.
    #[error("failed to {action} while exporting the BPF program")]
    Export {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed. `EACCES` means the caller
    /// has neither `no_new_privs` set nor `CAP_SYS_ADMIN`.
    #[error("failed to load the seccomp filter into the kernel")]
    Load {
        /// The errno of the seccomp(2) call.
        #[source]
        source: io::Error,
    },

    /// With `SECCOMP_FILTER_FLAG_TSYNC`, another thread of the process could
    /// not be switched to the new filter.
    #[error("failed to load the seccomp filter: thread {tid} could not be synchronized (TSYNC)")]
    TsyncFailed {
        /// The thread the kernel named.
        tid: libc::c_long,
    },

    /// An action name not defined by the runtime spec.
    #[error("unknown seccomp action {name:?}")]
    UnknownAction {
        /// The name as given.
        name: String,
    },

    /// An architecture name not defined by the runtime spec.
    #[error("unknown seccomp architecture {name:?}")]
    UnknownArch {
        /// The name as given.
        name: String,
    },

    /// A filter flag name not defined by the runtime spec.
    #[error("unknown seccomp flag {name:?}")]
    UnknownFlag {
        /// The name as given.
        name: String,
    },

    /// A comparison operator name not defined by the runtime spec.
    #[error("unknown seccomp operator {name:?}")]
    UnknownOperator {
        /// The name as given.
        name: String,
    },
}
