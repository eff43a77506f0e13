//! OCI seccomp profiles for the Berth container runtime, compiled with
//! libseccomp.
//!
//! The runtime calls [`compile`] on `linux.seccomp` in its parent process,
//! before any namespace or container process exists, so that every error in
//! the profile (and every feature the linked libseccomp or the kernel lacks)
//! is reported up front. The resulting [`Filter`] is plain data: after
//! `fork()`, the container init calls [`Filter::load`] right before `execve`,
//! which is a single seccomp(2) call.
//!
//! ```no_run
//! # fn run(spec: &oci_spec::runtime::LinuxSeccomp) -> Result<(), berth_seccomp::SeccompError> {
//! let filter = berth_seccomp::compile(spec)?;
//! // ... fork; in the child, after setting no_new_privs if asked:
//! if let Some(notify_fd) = filter.load()? {
//!     // hand notify_fd to the agent at linux.seccomp.listenerPath
//! #   drop(notify_fd);
//! }
//! # Ok(()) }
//! ```
//!
//! The [`supported_actions`], [`supported_archs`], [`supported_flags`] and
//! [`supported_operators`] lists (for `berth features`) are answered by
//! libseccomp for the running kernel, with the same calls `compile` makes.

mod compile;
mod enosys;
mod error;
#[cfg(test)]
mod eval;
mod features;
mod filter;
pub mod names;

pub use compile::{compile, MAX_ERRNO_RET, MAX_TRACE_RET};
pub use error::SeccompError;
pub use features::{
    libseccomp_version, supported_actions, supported_archs, supported_flags, supported_operators,
};
pub use filter::Filter;
