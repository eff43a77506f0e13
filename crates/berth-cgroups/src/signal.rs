//! Signalling every process of a container's cgroup without hitting a reused pid.
//!
//! A pid read from `cgroup.procs` may belong to another process by the time it is
//! signalled: the listed one exits and the number is given out again. Each pid is pinned
//! first with a pidfd, and signalled only if it is still listed afterwards: a pidfd
//! names one process for good, and a process that took over a number after the first
//! listing is listed again only if it is in the container's cgroup, so it is the
//! container's to signal. SIGKILL on cgroup2 uses `cgroup.kill`, which the kernel applies
//! to the whole cgroup at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::Result;
use crate::files;
use crate::manager::Manager;
use crate::CgroupMode;

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel has just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &OwnedFd, sig: i32) {
    // SAFETY: pidfd_send_signal with a pidfd of ours, a signal number, no siginfo and no
    // flags; it touches no memory of ours. A process gone meanwhile gives ESRCH, ignored.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

impl Manager {
    /// Sends `sig` to every process in the container's cgroup and those below it; returns
    /// how many were signalled (SIGKILL through cgroup.kill counts as one).
    pub fn signal_all(&self, sig: i32) -> Result<usize> {
        if sig == libc::SIGKILL && self.mode() == CgroupMode::Unified {
            if let Some(dir) = self.unified_path() {
                if dir.join("cgroup.kill").exists() {
                    files::write(&dir, "cgroup.kill", "1")?;
                    return Ok(1);
                }
            }
        }
        let pinned: Vec<(i32, OwnedFd)> = self
            .pids()?
            .into_iter()
            .filter_map(|pid| pidfd_open(pid).map(|fd| (pid, fd)))
            .collect();
        let listed = self.pids()?;
        let mut sent = 0;
        for (pid, fd) in &pinned {
            if listed.binary_search(pid).is_ok() {
                pidfd_send_signal(fd, sig);
                sent += 1;
            }
        }
        Ok(sent)
    }
}
