//! The VMM as a child process that never outlives its owner.
//!
//! - It runs in a process group of its own, so that a kill reaches whatever it may start.
//! - It is started by a thread of its own, which then waits for it: `PR_SET_PDEATHSIG`
//!   fires when the *thread* that forked dies, so the thread that forks must live exactly as
//!   long as the child. If the whole owning process dies, the kernel kills the VMM.
//! - That thread waits without reaping (`waitid(WNOWAIT)`) and reaps under a lock that
//!   [`VmmProcess::kill`] also takes: a signal is sent only while the pid is still ours, never
//!   to a process that reused it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid, Pid};

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessExit {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessExit::Exited(code) => write!(f, "exit status {code}"),
            ProcessExit::Signaled(sig) => match Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {}", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// What the waiting thread reports when the VMM has ended and been reaped.
type Reaped = Result<ProcessExit, Errno>;

pub(crate) struct VmmProcess {
    pid: Pid,
    /// Set, under the lock, once the VMM is reaped and its pid no longer ours.
    reaped: Arc<Mutex<bool>>,
    ended: Receiver<Reaped>,
    thread: Option<JoinHandle<()>>,
    exit: Option<ProcessExit>,
    /// Whether [`VmmProcess::kill`] sent SIGKILL while the VMM was still ours.
    killed: bool,
}

/// How long a drop waits for a killed VMM to be reaped before it leaves that to the thread.
const DROP_KILL_WAIT: Duration = Duration::from_secs(10);

impl VmmProcess {
    /// Starts `cmd` in a new process group, to be killed if this process dies.
    pub(crate) fn spawn(mut cmd: Command) -> io::Result<Self> {
        let parent = getpid();
        cmd.process_group(0);
        // SAFETY: the closure runs in the forked child before exec. It calls prctl and
        // getppid only, both async-signal-safe system calls, takes no lock and allocates
        // nothing (`io::Error::from_raw_os_error` builds a plain value).
        unsafe {
            cmd.pre_exec(move || {
                set_pdeathsig(Signal::SIGKILL)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                // The parent may have died between fork and prctl: then no signal comes.
                if getppid() != parent {
                    return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                Ok(())
            });
        }
        let (started_tx, started_rx) = mpsc::sync_channel::<io::Result<Pid>>(1);
        let (ended_tx, ended_rx) = mpsc::sync_channel::<Reaped>(1);
        let reaped = Arc::new(Mutex::new(false));
        let reaped_by_thread = Arc::clone(&reaped);
        let thread = thread::Builder::new()
            .name("berth-vmm-wait".into())
            .spawn(move || {
                let spawned = cmd.spawn();
                // The Command holds this side's copies of the child's stdio (the console
                // pipe's write end among them): closed now, so that a reader sees the end
                // when the VMM exits.
                drop(cmd);
                let child = match spawned {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let pid = Pid::from_raw(child.id() as i32);
                let _ = started_tx.send(Ok(pid));
                let _ = ended_tx.send(wait_and_reap(pid, &reaped_by_thread));
                // `Child` does not wait on drop; the child is reaped above.
                drop(child);
            })?;
        match started_rx.recv() {
            Ok(Ok(pid)) => Ok(Self {
                pid,
                reaped,
                ended: ended_rx,
                thread: Some(thread),
                exit: None,
                killed: false,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the vmm's waiting thread ended before starting it",
                ))
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    pub(crate) fn killed(&self) -> bool {
        self.killed
    }

    /// The exit, if the VMM has ended, without waiting.
    pub(crate) fn try_exit(&mut self) -> Result<Option<ProcessExit>, Errno> {
        if self.exit.is_none() {
            match self.ended.try_recv() {
                Ok(r) => self.ended(r)?,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(Errno::ECHILD),
            }
        }
        Ok(self.exit)
    }

    /// The exit, waiting up to `timeout` for it; `None` if the VMM still runs.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<Option<ProcessExit>, Errno> {
        if self.exit.is_none() {
            match self.ended.recv_timeout(timeout) {
                Ok(r) => self.ended(r)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(Errno::ECHILD),
            }
        }
        Ok(self.exit)
    }

    fn ended(&mut self, r: Reaped) -> Result<(), Errno> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.exit = Some(r?);
        Ok(())
    }

    /// Sends SIGKILL to the VMM's process group if the VMM is not reaped yet.
    pub(crate) fn kill(&mut self) -> Result<(), Errno> {
        let reaped = lock(&self.reaped);
        if *reaped {
            return Ok(());
        }
        match killpg(self.pid, Signal::SIGKILL) {
            Ok(()) => {
                self.killed = true;
                Ok(())
            }
            // A group whose leader is a zombie has no one left to signal.
            Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let _ = self.kill();
        // If it is not reaped in time (a VMM stuck in an uninterruptible sleep), the
        // waiting thread stays behind and reaps it when it can.
        let _ = self.wait(DROP_KILL_WAIT);
    }
}

fn lock(m: &Mutex<bool>) -> MutexGuard<'_, bool> {
    // Nothing panics while holding this lock; a poisoned one still holds a valid bool.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_and_reap(pid: Pid, reaped: &Mutex<bool>) -> Reaped {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut reaped = lock(reaped);
    let exit = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break Ok(ProcessExit::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => break Ok(ProcessExit::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => break Err(e),
        }
    };
    *reaped = true;
    exit
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry (a zombie still has one).
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn an_exit_status_is_reported_and_the_child_reaped() {
        let mut p = VmmProcess::spawn(sh("exit 7")).unwrap();
        let pid = p.pid();
        let exit = p.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(exit, Some(ProcessExit::Exited(7)));
        assert!(!alive(pid), "pid {pid} still has a /proc entry");
        assert!(!p.killed());
    }

    #[test]
    fn a_running_child_times_out_then_is_killed_with_its_group() {
        // The child starts a grandchild in the same group: both must die.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", marker.display());
        let mut p = VmmProcess::spawn(sh(&script)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() || std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the child never started its grandchild"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let grandchild: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(p.wait(Duration::from_millis(50)).unwrap(), None);
        p.kill().unwrap();
        let exit = p.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(exit, Some(ProcessExit::Signaled(Signal::SIGKILL as i32)));
        assert!(p.killed());
        // The grandchild was killed too; init reaps it, so wait for its entry to go.
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(grandchild as u32) {
            let state =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if state.contains(") Z ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn dropping_kills_and_reaps() {
        let p = VmmProcess::spawn(sh("sleep 1000")).unwrap();
        let pid = p.pid();
        drop(p);
        assert!(!alive(pid), "pid {pid} outlived its handle");
    }

    /// Dead or a zombie waiting for its new parent to reap it.
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    const OWNER_ENV: &str = "BERTH_VM_TEST_OWNER_PIDFILE";

    #[test]
    fn the_vmm_dies_with_its_owner() {
        if let Some(pidfile) = std::env::var_os(OWNER_ENV) {
            // The owner: start a VMM, say its pid, and wait to be killed. PDEATHSIG reaches
            // the VMM only, not what it may start: `exec` keeps the shell from forking.
            let p = VmmProcess::spawn(sh("exec sleep 1000")).unwrap();
            std::fs::write(pidfile, p.pid().to_string()).unwrap();
            thread::sleep(Duration::from_secs(1000));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("vmm.pid");
        let mut owner = Command::new(std::env::current_exe().unwrap())
            .args(["process::tests::the_vmm_dies_with_its_owner", "--exact"])
            .args(["--nocapture", "--test-threads=1"])
            .env(OWNER_ENV, &pidfile)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let vmm: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the owner never started its vmm");
            thread::sleep(Duration::from_millis(10));
        };
        assert!(!dead(vmm));
        // SIGKILL: the owner runs no destructor; only the kernel can end the VMM.
        owner.kill().unwrap();
        owner.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dead(vmm) {
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(Pid::from_raw(vmm as i32), Signal::SIGKILL);
                panic!("vmm {vmm} outlived its owner");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_missing_binary_is_an_error() {
        let e = VmmProcess::spawn(Command::new("/nonexistent/vmm"))
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
