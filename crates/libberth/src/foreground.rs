//! Running a container in the foreground: forward signals to its init, proxy its
//! terminal, reap, and return its exit status. Shared by `berth run`/`exec` and `berthctl`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::Error;

/// From here on, every forwardable signal arrives through the returned signalfd.
pub fn forward_signals() -> Result<SignalFd, Error> {
    let mut mask = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ] {
        mask.remove(s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::Unsupported(format!("signalfd: {e}")))
}

fn exit_code(st: WaitStatus) -> Option<u8> {
    match st {
        WaitStatus::Exited(_, c) => Some(c as u8),
        WaitStatus::Signaled(_, s, _) => Some(128u8.wrapping_add(s as u8)),
        _ => None,
    }
}

/// Reaps children, forwards signals and pumps the pty until the init exits.
pub fn wait_loop(init: i32, sfd: &SignalFd, master: Option<&OwnedFd>) -> u8 {
    let init = Pid::from_raw(init);
    let stdin = std::io::stdin();
    let mut stdin_open = master.is_some();
    if let Some(m) = master {
        copy_winsize(m);
    }
    loop {
        // Reap first: the init may be gone before any signal arrives.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(init) {
                        if let Some(c) = exit_code(st) {
                            if let Some(m) = master {
                                drain(m);
                            }
                            return c;
                        }
                    }
                }
            }
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        // EINTR and other poll failures fall through to the next round, which reaps first.
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    continue;
                }
                if sig == libc::SIGWINCH {
                    if let Some(m) = master {
                        copy_winsize(m);
                    }
                    continue;
                }
                // SAFETY: kill(2) forwarding a signal number to the container's init.
                unsafe { libc::kill(init.as_raw(), sig) };
            }
        }
        if let Some(m) = master {
            if ready.get(1).copied().unwrap_or(false) {
                pump(m.as_raw_fd(), 1);
            }
            if stdin_open && ready.get(2).copied().unwrap_or(false) && !pump(0, m.as_raw_fd()) {
                stdin_open = false;
            }
        }
    }
}

/// Copies what is ready from `from` to `to`; false on end of file or error.
fn pump(from: i32, to: i32) -> bool {
    let mut buf = [0u8; 8192];
    // SAFETY: reading into a stack buffer of the given length from an open fd.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return false;
    }
    let mut off = 0usize;
    while off < n as usize {
        // SAFETY: writing bytes of `buf` that were just read; the fd is open.
        let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
        if w <= 0 {
            return false;
        }
        off += w as usize;
    }
    true
}

fn drain(master: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while pump(master.as_raw_fd(), 1) {}
}

fn copy_winsize(master: &OwnedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into `ws`; TIOCSWINSZ reads it. Both fds are open.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Puts our stdin terminal in raw mode while proxying; restores it on drop.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
