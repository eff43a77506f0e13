//! libberth: the Berth OCI runtime as a library.
//!
//! The `berth` binary is a thin command-line adapter over [`container::Runtime`]; the shim
//! and the engine link this crate and never shell out to the binary.

pub mod caps;
pub mod channel;
pub mod checkpoint;
pub mod clone;
pub mod console;
pub mod container;
pub mod default_spec;
pub mod error;
pub mod events;
pub mod exec;
pub mod features;
pub mod foreground;
pub mod hooks;
pub mod init;
pub mod lsm;
pub mod namespace;
pub mod netdev;
pub mod notify;
pub mod procattr;
pub mod process;
pub mod rlimit;
pub mod rootfs;
pub mod rootless;
pub mod sealed;
pub mod signal;
pub mod spec;
pub mod state;

pub use berth_seccomp::libseccomp_version;
pub use container::{ConsoleTarget, CreateOptions, Created, Runtime};
pub use error::{Error, Result};
pub use exec::{apply_overrides, ExecOptions, Execed, ProcessOverrides};
pub use state::Status;
