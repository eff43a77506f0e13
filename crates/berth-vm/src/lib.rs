//! Berth's virtual machines: boot a Linux guest from a kernel, an initramfs, block devices and
//! a control channel, and report how it ended. The design and the trust boundary are in
//! `docs/vm.md`.
//!
//! - [`Hypervisor`] boots a [`VmConfig`] into a [`Vm`] handle; [`Vm::wait`] reports a
//!   [`VmExit`]: the guest powered off, reset, panicked, or the VMM process was killed or
//!   failed. Dropping a `Vm` kills and reaps the VMM and removes the control socket.
//! - [`qemu::Qemu`] is the one backend so far: Debian's QEMU with the `microvm` machine, KVM
//!   where [`accel::probe`] says a stock guest can run on `/dev/kvm`, TCG otherwise.
//! - [`kernel::GuestKernel`] reads the guest kernel cache that `scripts/vm-kernel.sh` writes
//!   (Debian's cloud kernel and the virtio modules it needs), and the modules' load order.
//! - [`initramfs::Initramfs`] writes a gzip'd newc cpio archive for the guest's first stage.
//!
//! # A second backend
//!
//! Callers hold a `Box<dyn Hypervisor>` and `Box<dyn Vm>` and see only [`VmConfig`],
//! [`VmExit`] and [`VmError`]; nothing QEMU-specific leaks through them. A backend on the
//! rust-vmm crates (kvm-ioctls, vm-memory, linux-loader, virtio-queue) for hosts with real
//! KVM implements the same two traits, and callers pick it at start-up without other change.
//! What such a backend needs is in `docs/vm.md`.
//!
//! This crate knows nothing of the agent protocol: the control channel is a byte stream to it.

pub mod accel;
mod config;
mod console;
pub mod initramfs;
pub mod kernel;
mod process;
pub mod qemu;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use config::{
    BlockDevice, ConfigError, ControlChannel, SharedDir, VmConfig, CONTROL_PORT_NAME,
};
pub use console::LOG_MAX as CONSOLE_LOG_MAX;

/// A way to run VMs: one per backend (QEMU now; an own VMM on rust-vmm later).
pub trait Hypervisor: Send + Sync {
    /// The backend's name, for `berthctl info` and logs ("qemu").
    fn name(&self) -> &'static str;

    /// The accelerator this backend boots guests with, and why it was chosen.
    fn accel(&self) -> &accel::AccelProbe;

    /// Starts a VM. On success the VMM runs and, if the config has a control channel, its
    /// host socket accepts connections; the guest may still be booting. What the VMM finds
    /// wrong after that (QEMU loads the kernel after it listens) comes from [`Vm::wait`] as
    /// [`VmExit::VmmFailed`] with the VMM's stderr.
    fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, VmError>;
}

/// A running (or ended) VM. Dropping it kills and reaps the VMM if it still runs, and removes
/// the host end of the control channel: no process or socket outlives the handle.
pub trait Vm: Send {
    /// The VMM's process id. It stays ours (a zombie at worst) until [`Vm::wait`] has
    /// returned an exit or the handle is dropped; do not signal it after that.
    fn pid(&self) -> u32;

    /// Waits up to `timeout` for the VM to end and says how it ended. A VM that still runs
    /// then is an error ([`VmError::WaitTimeout`]) and keeps running: the caller decides
    /// whether to wait more or [`Vm::kill`] it. Once ended, every call returns the same exit.
    fn wait(&mut self, timeout: Duration) -> Result<VmExit, VmError>;

    /// Kills the VMM (and anything in its process group) and reaps it; [`Vm::wait`] then
    /// reports [`VmExit::Killed`] with `by_caller` set. A VM that has already ended is left
    /// as it is.
    fn kill(&mut self) -> Result<(), VmError>;
}

/// How a VM ended.
///
/// `Poweroff`, `Reset` and `Panic` are read from the guest's console after the VMM exited
/// cleanly: the guest can print anything there, so they are what the guest kernel *says*,
/// never a fact the host checked. `Killed` and `VmmFailed` come from the VMM's wait status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (`reboot: Power down` was the last kernel event on the console).
    Poweroff,
    /// The guest asked for a reboot, or reset with no message (a triple fault); VMs do not
    /// reboot (`-no-reboot`), so it ended instead.
    Reset,
    /// The guest kernel panicked; `line` is the console's panic line, made printable.
    Panic {
        /// The `Kernel panic - not syncing: ...` line, at most [`PANIC_LINE_MAX`] bytes.
        line: String,
    },
    /// The VMM process died of a signal: killed by [`Vm::kill`] (`by_caller`), by someone
    /// else, or crashed.
    Killed {
        /// The signal number.
        signal: i32,
        /// Whether [`Vm::kill`] sent it.
        by_caller: bool,
    },
    /// The VMM process exited with a failure status: its own error, not the guest's.
    VmmFailed {
        /// The exit status.
        code: i32,
        /// The end of the VMM's stderr, made printable.
        stderr: String,
    },
}

/// The longest panic line [`VmExit::Panic`] carries.
pub const PANIC_LINE_MAX: usize = 256;

impl VmExit {
    /// Whether the guest ended as asked: only a power-off.
    pub fn is_clean(&self) -> bool {
        matches!(self, VmExit::Poweroff)
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::Poweroff => write!(f, "guest powered off"),
            VmExit::Reset => write!(f, "guest reset (a reboot request or a triple fault)"),
            VmExit::Panic { line } => write!(f, "guest kernel panic: {line}"),
            VmExit::Killed { signal, by_caller } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                if *by_caller {
                    write!(f, "vmm killed by {name} (as asked)")
                } else {
                    write!(f, "vmm killed by {name}")
                }
            }
            VmExit::VmmFailed { code, stderr } if stderr.is_empty() => {
                write!(f, "vmm exited with status {code}")
            }
            VmExit::VmmFailed { code, stderr } => {
                write!(f, "vmm exited with status {code}: {stderr}")
            }
        }
    }
}

/// Errors of booting, waiting for and killing a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid vm configuration")]
    Config(#[from] ConfigError),
    #[error("cannot create the vmm's stderr buffer")]
    StderrBuffer(#[source] nix::Error),
    #[error("cannot start the vmm {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the vmm {binary} ended during start-up ({exit}): {stderr}")]
    StartFailed {
        binary: PathBuf,
        exit: String,
        stderr: String,
    },
    #[error("the vmm {binary} (pid {pid}) made no control socket {socket} within {timeout:?}")]
    StartTimeout {
        binary: PathBuf,
        pid: u32,
        socket: PathBuf,
        timeout: Duration,
    },
    #[error("vm (vmm pid {pid}) still running after {timeout:?}")]
    WaitTimeout { pid: u32, timeout: Duration },
    #[error("cannot signal the vmm (pid {pid})")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot wait for the vmm (pid {pid})")]
    Wait {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("the vmm (pid {pid}) did not die within {timeout:?} of SIGKILL")]
    KillTimeout { pid: u32, timeout: Duration },
    #[error("cannot read the console log {path}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
