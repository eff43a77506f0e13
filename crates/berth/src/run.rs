//! `berth run`: create, start, and unless detached wait for the init, forwarding signals to it
//! and proxying its terminal; exits with the container's exit status.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;

use berth_cli::Run;
use libberth::{ConsoleTarget, Error, Runtime};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::log::Logger;

type CmdResult = Result<ExitCode, (Option<String>, Error)>;

pub fn run(rt: &Runtime, r: &Run, logger: &Logger) -> CmdResult {
    let id = r.container_id.clone();
    let fail = |e: Error| (Some(id.clone()), e);
    let mut o = crate::create_options(&id, &r.opts);
    let terminal = terminal_requested(&r.opts.bundle);
    if terminal && o.console.is_none() {
        if r.detach {
            return Err(fail(Error::Unsupported(
                "a detached terminal container needs --console-socket".into(),
            )));
        }
        o.console = Some(ConsoleTarget::Return);
    }
    if !r.detach {
        // Become the init's parent once the intermediate exits, to wait for it.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let created = rt.create(&o).map_err(fail)?;
    if r.detach {
        rt.start(&id).map_err(fail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sfd = forward_signals().map_err(fail)?;
    let start = rt.start(&id);
    if let Err(e) = start {
        let _ = rt.delete(&id, true);
        return Err(fail(e));
    }
    let raw_guard = created
        .console_master
        .as_ref()
        .and_then(|_| RawMode::enter());
    let code = wait_loop(created.pid, &sfd, created.console_master.as_ref(), logger);
    drop(raw_guard);
    if !r.keep {
        if let Err(e) = rt.delete(&id, true) {
            logger.warn(&format!(
                "container {id:?}: delete after run: {}",
                e.chain()
            ));
        }
    }
    Ok(ExitCode::from(code))
}

/// From here on, every forwardable signal arrives through the returned signalfd.
pub(crate) fn forward_signals() -> Result<SignalFd, Error> {
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

fn terminal_requested(bundle: &std::path::Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false)
}

fn exit_code(st: WaitStatus) -> Option<u8> {
    match st {
        WaitStatus::Exited(_, c) => Some(c as u8),
        WaitStatus::Signaled(_, s, _) => Some(128u8.wrapping_add(s as u8)),
        _ => None,
    }
}

/// Reaps children, forwards signals and pumps the pty until the init exits.
pub(crate) fn wait_loop(
    init: i32,
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    logger: &Logger,
) -> u8 {
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
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                logger.warn(&format!("poll: {e}"));
            }
        }
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
pub(crate) struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub(crate) fn enter() -> Option<RawMode> {
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
