//! The one error type of this crate.
//!
//! Every variant carries what a user needs to act on it: the file and the value for a
//! failed write, the controller for a missing one, the spec field for a bad resource.
//! The underlying `io::Error` is kept as `#[source]` and not repeated in the message,
//! so printing the chain gives `failed to write "100" to /sys/fs/cgroup/...: Device or
//! resource busy`.

use std::io;
use std::path::PathBuf;

/// Errors from detecting, creating, configuring and removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file describing the host (`/proc/self/mountinfo`, `/proc/self/cgroup`) could not be read.
    #[error("failed to read {path}")]
    ReadHostFile {
        /// The file that was read.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },

    /// A line of `/proc/self/mountinfo` does not have the documented shape.
    #[error("malformed mountinfo line {line_no}: {line:?}")]
    MalformedMountInfo {
        /// 1-based line number.
        line_no: usize,
        /// The line itself.
        line: String,
    },

    /// A line of `/proc/self/cgroup` does not have the `id:controllers:path` shape.
    #[error("malformed /proc/self/cgroup line {line_no}: {line:?}")]
    MalformedProcCgroup {
        /// 1-based line number.
        line_no: usize,
        /// The line itself.
        line: String,
    },

    /// Neither a cgroup v1 controller hierarchy nor a cgroup2 file system is mounted.
    #[error("no cgroup v1 controller or cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroupMounts,

    /// The container id cannot be used as a cgroup directory name.
    #[error("container id {id:?} cannot name a cgroup: {reason}")]
    InvalidContainerId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `linux.cgroupsPath` is not acceptable.
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidCgroupsPath {
        /// The path as given in the spec.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// `--systemd-cgroup` was asked for on a host whose init is not systemd.
    #[error("systemd is not running on this host: --systemd-cgroup needs systemd as init")]
    SystemdNotRunning,

    /// A resource in the spec (or an operation) needs a controller that this host does
    /// not offer, neither in cgroup v1 nor in cgroup v2.
    #[error(
        "{what} needs the {controller} cgroup controller, which is not available on this host"
    )]
    ControllerUnavailable {
        /// What needs it, for example `linux.resources.memory.limit`.
        what: String,
        /// The controller, for example `memory`.
        controller: String,
    },

    /// On cgroup v2, the controller exists on the host but is not enabled for the
    /// container's cgroup (the parent's `cgroup.subtree_control` lacks it).
    #[error(
        "the {controller} controller is not enabled in {path}: \
         add +{controller} to cgroup.subtree_control of its parent"
    )]
    ControllerNotEnabled {
        /// The controller, for example `memory`.
        controller: String,
        /// The container's cgroup directory.
        path: PathBuf,
    },

    /// A value in `linux.resources` is out of range or inconsistent.
    #[error("invalid linux.resources.{field}: {reason}")]
    InvalidResource {
        /// The spec field, for example `blockIO.weight`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A resource that this cgroup version cannot express was requested.
    #[error("linux.resources.{field} is not supported on {mode}: {reason}")]
    Unsupported {
        /// The spec field.
        field: String,
        /// The cgroup mode of the host, in words.
        mode: &'static str,
        /// Why, or what to use instead.
        reason: &'static str,
    },

    /// A resource needs an interface file that this kernel does not provide.
    #[error("linux.resources.{field} needs {path}, which this kernel does not provide{hint}")]
    MissingFile {
        /// The spec field.
        field: String,
        /// The file that does not exist.
        path: PathBuf,
        /// A hint on how to get it, starting with "; " (or empty).
        hint: &'static str,
    },

    /// `linux.resources.unified` was given but the host is not pure cgroup v2.
    #[error("unified resources need cgroup v2 (this host uses {mode})")]
    UnifiedNeedsV2 {
        /// The cgroup mode of the host, in words.
        mode: &'static str,
    },

    /// A key of `linux.resources.unified` names no file of the container's cgroup.
    #[error("linux.resources.unified key {key:?} has no file {path} in the container's cgroup")]
    UnifiedKeyUnknown {
        /// The key as given.
        key: String,
        /// The file that does not exist.
        path: PathBuf,
    },

    /// A key of `linux.resources.unified` could not be written.
    #[error("failed to write linux.resources.unified key {key:?} = {value:?} to {path}")]
    UnifiedWrite {
        /// The key as given.
        key: String,
        /// The value as given.
        value: String,
        /// The file written.
        path: PathBuf,
        /// The write error.
        #[source]
        source: io::Error,
    },

    /// Writing a cgroup interface file failed.
    #[error("failed to write {value:?} to {path}")]
    Write {
        /// The file written.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The write error.
        #[source]
        source: io::Error,
    },

    /// Reading a cgroup interface file failed.
    #[error("failed to read {path}")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },

    /// A cgroup interface file held something that is not what the kernel documents.
    #[error("unexpected content {content:?} in {path}")]
    Parse {
        /// The file read.
        path: PathBuf,
        /// What it held.
        content: String,
    },

    /// Creating a cgroup directory failed.
    #[error("failed to create cgroup directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The mkdir error.
        #[source]
        source: io::Error,
    },

    /// Removing a cgroup directory failed (after retries, for `EBUSY`).
    #[error("failed to remove cgroup directory {path}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The rmdir error.
        #[source]
        source: io::Error,
    },

    /// Listing a cgroup directory failed.
    #[error("failed to list cgroup directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The readdir error.
        #[source]
        source: io::Error,
    },

    /// The freezer did not reach the requested state in time.
    #[error("cgroup {path} did not become {wanted} in time (last state {last:?})")]
    FreezeTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The state asked for.
        wanted: &'static str,
        /// The last state read.
        last: String,
    },

    /// Setting up a notification on a cgroup file (an eventfd for `cgroup.event_control`,
    /// an inotify watch) or waiting for one failed.
    #[error("failed to watch {path} for {what}")]
    Watch {
        /// What was to be noticed, for example `OOM kills`.
        what: &'static str,
        /// The cgroup file watched.
        path: PathBuf,
        /// The system call error.
        #[source]
        source: io::Error,
    },

    /// The device-filter program has more instructions than a jump can span.
    #[error("device rules produce a BPF program of {insns} instructions, too many to encode")]
    DeviceProgramTooLarge {
        /// Number of instructions.
        insns: usize,
    },

    /// The kernel's verifier or loader rejected the device-filter program.
    #[error("failed to load the cgroup device BPF program; verifier log: {log}")]
    BpfLoad {
        /// What the verifier said (may be empty).
        log: String,
        /// The `bpf(BPF_PROG_LOAD)` error.
        #[source]
        source: io::Error,
    },

    /// A `bpf(2)` command other than loading failed.
    #[error("bpf({command}) failed on cgroup {path}")]
    Bpf {
        /// The `bpf` command, for example `BPF_PROG_ATTACH`.
        command: &'static str,
        /// The cgroup directory it was about.
        path: PathBuf,
        /// The syscall error.
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    /// The OS error number beneath this error, if it came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::ReadHostFile { source, .. }
            | Self::UnifiedWrite { source, .. }
            | Self::Write { source, .. }
            | Self::Read { source, .. }
            | Self::CreateDir { source, .. }
            | Self::RemoveDir { source, .. }
            | Self::ReadDir { source, .. }
            | Self::BpfLoad { source, .. }
            | Self::Watch { source, .. }
            | Self::Bpf { source, .. } => source.raw_os_error(),
            Self::MalformedMountInfo { .. }
            | Self::MalformedProcCgroup { .. }
            | Self::NoCgroupMounts
            | Self::InvalidContainerId { .. }
            | Self::InvalidCgroupsPath { .. }
            | Self::SystemdNotRunning
            | Self::ControllerUnavailable { .. }
            | Self::ControllerNotEnabled { .. }
            | Self::InvalidResource { .. }
            | Self::Unsupported { .. }
            | Self::UnifiedNeedsV2 { .. }
            | Self::UnifiedKeyUnknown { .. }
            | Self::MissingFile { .. }
            | Self::Parse { .. }
            | Self::FreezeTimeout { .. }
            | Self::DeviceProgramTooLarge { .. } => None,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// Builds an [`CgroupError::InvalidResource`].
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidResource {
        field: field.into(),
        reason: reason.into(),
    }
}
