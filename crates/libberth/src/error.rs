//! The runtime's error type. Each variant carries what an operator needs to find the cause:
//! the file, the field, the path or the system call. The source error is never repeated in the
//! message; callers print the whole chain.

use std::path::PathBuf;

use crate::state::{Op, Status};

/// Result alias for the runtime library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// runc's words lead: engines and conformance suites look for them.
    #[error("invalid container ID format: {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },

    /// The id is printed before the message (`container "x": ...`), not in it: engines
    /// match the words "container with given ID already exists" whole.
    #[error("container with given ID already exists")]
    Exists(String),

    /// As [`Error::Exists`]: Docker matches "container does not exist" whole.
    #[error("container does not exist")]
    NotFound(String),

    /// A config.json that parses but breaks a rule of the runtime spec or of this host.
    #[error("{file}: {field}: {reason}")]
    Config {
        file: PathBuf,
        field: String,
        reason: String,
    },

    /// A config.json that is not valid JSON or does not match the spec's schema.
    #[error("{file}: not a valid runtime spec")]
    ConfigParse {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    #[error("cgroup")]
    Cgroup(#[from] berth_cgroups::CgroupError),

    #[error("seccomp")]
    Seccomp(#[from] berth_seccomp::SeccompError),

    /// An error reported by the container's init process before it reached exec.
    #[error("container init: {0}")]
    Init(String),

    /// An operation that the container's current state does not allow, said as runc
    /// says it (see [`Op::refusal`]).
    #[error("{}", op.refusal(*status))]
    BadState { op: Op, status: Status },

    /// A hook that failed where the spec says the failure is fatal.
    #[error("{kind} hook {path:?} failed: {reason}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("invalid signal {0:?}")]
    InvalidSignal(String),

    #[error("{0}")]
    Unsupported(String),

    /// The user process cannot be executed (podman maps these texts to exit codes 126/127).
    #[error("{0}")]
    Exec(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }

    /// The full chain, "outer: inner: cause", for one-line reports.
    pub fn chain(&self) -> String {
        chain_of(self)
    }
}

/// Adds context to `std::io::Result` and `nix::Result`.
pub(crate) trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::sys(f(), e))
    }
}

/// The full chain of any error, "outer: inner: cause", for one-line reports.
pub fn chain_of(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
