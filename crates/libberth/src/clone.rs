//! fork, or clone3 with CLONE_INTO_CGROUP: the child starts life in a cgroup2 directory, so
//! it never has to be migrated there (a migration costs the kernel an RCU grace period).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::{Context, Result};

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of the fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawned {
    /// The child; `in_cgroup` says it was created in the cgroup2 directory.
    Child {
        in_cgroup: bool,
    },
    Parent {
        child: Pid,
    },
}

/// Forks, placing the child in `cgroup` (a cgroup2 directory fd) when the kernel can; falls
/// back to a plain fork (and `in_cgroup: false`) when clone3 or CLONE_INTO_CGROUP is missing.
///
/// # Safety
///
/// As for `fork`: the calling process must be single-threaded, so that the child may run
/// arbitrary code.
pub unsafe fn fork_into(cgroup: Option<BorrowedFd<'_>>) -> Result<Spawned> {
    if let Some(cg) = cgroup {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cg.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM or a new stack duplicates the process like fork;
        // the caller guarantees it is single-threaded. `args` is valid for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match Errno::result(rc) {
            Ok(0) => return Ok(Spawned::Child { in_cgroup: true }),
            Ok(pid) => {
                return Ok(Spawned::Parent {
                    child: Pid::from_raw(pid as i32),
                })
            }
            // Old kernel, no CLONE_INTO_CGROUP, or a cgroup it refuses: fork below.
            Err(Errno::ENOSYS)
            | Err(Errno::E2BIG)
            | Err(Errno::EINVAL)
            | Err(Errno::EOPNOTSUPP) => {}
            Err(e) => {
                return Err(crate::error::Error::sys(
                    "clone3 into the container's cgroup",
                    e,
                ))
            }
        }
    }
    // SAFETY: the caller guarantees the process is single-threaded.
    match unsafe { fork() }.ctx(|| "fork".into())? {
        ForkResult::Child => Ok(Spawned::Child { in_cgroup: false }),
        ForkResult::Parent { child } => Ok(Spawned::Parent { child }),
    }
}
