//! Process setup steps shared by the container init and `exec`: the executable lookup, the
//! user switch, the cwd, fd hygiene and the final execve.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{setresgid, setresuid, Gid, Uid};

use crate::error::{Context, Error, Result};
use crate::rootfs;

/// A function that never returns normally (it execs or fails).
pub enum Never {}

/// The standard streams of a container's process: a descriptor for each one given, the
/// creating process's own for the others.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// In a forked setup process: puts the given descriptors on 0, 1 and 2. Each goes to a
    /// free number first, so that one already sitting on 0-2 is not overwritten before it
    /// is moved; the originals are closed with the rest of the inherited fds afterwards.
    pub(crate) fn install(&self) -> Result<()> {
        let mut moved = Vec::new();
        for (target, fd) in [(0, &self.stdin), (1, &self.stdout), (2, &self.stderr)] {
            if let Some(fd) = fd {
                let tmp = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                    .ctx(|| format!("duplicate the descriptor for fd {target}"))?;
                moved.push((target, tmp));
            }
        }
        for (target, tmp) in moved {
            // SAFETY: dup2 of a descriptor this process owns onto 0, 1 or 2, which it may
            // replace: the setup process's stdio belongs to the container from here on.
            let rc = unsafe { libc::dup2(tmp, target) };
            let dup = Errno::result(rc).ctx(|| format!("put the container's fd {target} in place"));
            // SAFETY: `tmp` was made above, is CLOEXEC and is not used again.
            unsafe { libc::close(tmp) };
            dup?;
        }
        Ok(())
    }
}

/// Forks the next process of a setup chain and sends its pid (`Msg::InitPid`) to the
/// parent; the child runs `child` only once that message is on the channel, so the parent
/// always learns the pid before anything the child says.
pub(crate) fn fork_after_pid_sent(
    chan: &crate::channel::Channel,
    what: &str,
    // The child side never returns in practice (it execs or _exits).
    child: impl FnOnce(&crate::channel::Channel) -> Result<()>,
) -> Result<()> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| format!("pipe to {what}"))?;
    // SAFETY: the caller is single-threaded (a process forked from single-threaded berth).
    match unsafe { nix::unistd::fork() }.ctx(|| what.to_string())? {
        nix::unistd::ForkResult::Child => {
            drop(w);
            let mut b = [0u8; 1];
            // Returns when the parent wrote or exited; either way the pid was sent first.
            let _ = nix::unistd::read(&r, &mut b);
            drop(r);
            child(chan)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(r);
            let sent = chan.send(&crate::channel::Msg::InitPid(child.as_raw()));
            let _ = nix::unistd::write(&w, b"1");
            sent
        }
    }
}

pub(crate) fn set_dumpable(on: bool) -> Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0|1) only changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) };
    Errno::result(rc)
        .map(drop)
        .ctx(|| "prctl(PR_SET_DUMPABLE)".into())
}

/// Finds args[0] the way execvp would, with the container's PATH, inside the new root.
pub fn lookup_path(cmd: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return match fs::metadata(&p) {
            // runc 1.1's words: engines map "permission denied" to exit 126.
            Ok(m) if m.is_dir() => Err(Error::Exec(format!(
                "exec: {cmd:?}: permission denied (is a directory)"
            ))),
            Ok(_) if executable(&p) => Ok(p),
            Ok(_) => Err(Error::Exec(format!("exec: {cmd:?}: permission denied"))),
            Err(_) => Err(Error::Exec(format!(
                "exec: {cmd:?}: no such file or directory"
            ))),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(cmd);
        if executable(&cand) {
            return Ok(cand);
        }
    }
    Err(Error::Exec(format!(
        "exec: {cmd:?}: executable file not found in $PATH"
    )))
}

/// The user switch of process.user, prepared before the seccomp filter loads: what it
/// needs to read (/proc/self/setgroups) is read here, so that applying it takes only
/// prctl, setgroups, setresgid and setresuid, which every seccomp allowlist has.
pub(crate) struct UserSwitch {
    uid: Uid,
    gid: Gid,
    /// None: setgroups is denied in this user namespace and no groups were asked for.
    groups: Option<Vec<Gid>>,
}

impl UserSwitch {
    pub(crate) fn prepare(user: &oci_spec::runtime::User) -> Result<Self> {
        let gids: Vec<Gid> = user
            .additional_gids()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        let setgroups_allowed = fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() != "deny")
            .unwrap_or(true);
        if !setgroups_allowed && !gids.is_empty() {
            return Err(Error::Unsupported(
                "process.user.additionalGids: setgroups is denied in this user namespace".into(),
            ));
        }
        Ok(UserSwitch {
            uid: Uid::from_raw(user.uid()),
            gid: Gid::from_raw(user.gid()),
            groups: setgroups_allowed.then_some(gids),
        })
    }

    /// Switches to the user, keeping the permitted capabilities across the uid change
    /// (they are set right after).
    pub(crate) fn apply(&self) -> Result<()> {
        // SAFETY: prctl(PR_SET_KEEPCAPS, 1) only sets a flag on this process.
        Errno::result(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
            .ctx(|| "set keep-caps".into())?;
        if let Some(groups) = &self.groups {
            nix::unistd::setgroups(groups).ctx(|| format!("set additional gids {groups:?}"))?;
        }
        setresgid(self.gid, self.gid, self.gid).ctx(|| format!("set gid {}", self.gid))?;
        setresuid(self.uid, self.uid, self.uid).ctx(|| format!("set uid {}", self.uid))?;
        // SAFETY: prctl(PR_SET_KEEPCAPS, 0) only clears a flag on this process.
        Errno::result(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) })
            .ctx(|| "clear keep-caps".into())?;
        Ok(())
    }
}

/// process.cwd, opened inside the new root without magic links, so a cwd such as
/// /proc/self/fd/N cannot reach a host directory (CVE-2024-21626). A missing cwd is
/// created (as root, 0755), as runc does.
pub(crate) fn open_cwd(cwd: &Path) -> Result<OwnedFd> {
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /".into())?;
    match rootfs::resolve::open_in_root(root.as_fd(), cwd, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => {
            rootfs::resolve::mkdir_all(root.as_fd(), cwd, Mode::from_bits_truncate(0o755))
        }
        Err(e) => Err(Error::sys(format!("process.cwd {}", cwd.display()), e)),
    }
}

/// Enters the directory `open_cwd` gave, and checks that it is inside the root. fchdir and
/// getcwd only: this may run under the seccomp filter.
pub(crate) fn enter_cwd(fd: &OwnedFd, cwd: &Path) -> Result<()> {
    nix::unistd::fchdir(fd).ctx(|| format!("chdir to process.cwd {}", cwd.display()))?;
    let now = nix::unistd::getcwd().ctx(|| format!("getcwd after chdir to {}", cwd.display()))?;
    if !now.starts_with("/") {
        return Err(Error::Init(format!(
            "process.cwd {} is outside the container's root",
            cwd.display()
        )));
    }
    Ok(())
}

/// The last steps of a container process before it reports Ready, shared by the init and
/// `exec`.
///
/// The seccomp filter is loaded as late as it can be, and after it only system calls that
/// every seccomp allowlist has are made (prctl, setgroups, setres[ug]id, capset, fchdir,
/// getcwd, sendmsg, then in the caller poll, read, write, rt_sigprocmask, execve), as runc
/// and crun do: a profile written before openat2, close_range or statx existed must not
/// break the runtime's own setup. Everything that needs more (opening and creating the
/// cwd, reading /proc, marking fds close-on-exec) happens before the filter.
///
/// - Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: it loads just before the
///   user switch drops it.
/// - Under no_new_privs a notify filter loads here, at the end: its fd must reach the
///   listener through the runtime, which listens only until Ready. Any other filter is
///   returned, for the caller to load right before exec.
pub(crate) struct FinalSetup<'a> {
    pub process: &'a oci_spec::runtime::Process,
    pub caps: &'a crate::caps::CapSets,
    pub seccomp: Option<&'a berth_seccomp::Filter>,
    /// The pty slave to make the controlling terminal and stdio.
    pub console: Option<&'a OwnedFd>,
    pub preserve_fds: u32,
}

impl<'a> FinalSetup<'a> {
    /// Runs the steps; returns the filter the caller still has to load.
    pub(crate) fn run(
        &self,
        chan: &crate::channel::Channel,
    ) -> Result<Option<&'a berth_seccomp::Filter>> {
        let p = self.process;
        crate::signal::default_sigpipe()?;
        self.caps.apply_bounding()?;
        let nnp = p.no_new_privileges().unwrap_or(false);
        if nnp {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) only sets a flag on this process.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            Errno::result(rc).ctx(|| "set no_new_privs".into())?;
        }
        let user = UserSwitch::prepare(p.user())?;
        let cwd = open_cwd(p.cwd())?;
        // Entered as root first, as runc does; a directory root may not enter (an id
        // unmapped in the user namespace) is entered again as the user.
        let cwd_entered = match enter_cwd(&cwd, p.cwd()) {
            Ok(()) => true,
            Err(Error::Sys {
                source: Errno::EACCES | Errno::EPERM,
                ..
            }) => false,
            Err(e) => return Err(e),
        };
        if let Some(mask) = p.user().umask() {
            nix::sys::stat::umask(Mode::from_bits_truncate(mask));
        }
        if let Some(pty) = self.console {
            crate::console::become_controlling(pty)?;
        }
        close_fds_on_exec(3 + self.preserve_fds)?;
        if !nnp {
            if let Some(f) = self.seccomp {
                crate::notify::load_filter(chan, f)?;
            }
        }
        user.apply()?;
        // A uid change resets dumpable to fs.suid_dumpable: keep the container's processes
        // from tracing us before exec (CVE-2016-9962).
        set_dumpable(false)?;
        self.caps.apply_process()?;
        if !cwd_entered {
            enter_cwd(&cwd, p.cwd())?;
        }
        match self.seccomp {
            Some(f) if nnp && f.uses_notify() => crate::notify::load_filter(chan, f).map(|()| None),
            Some(f) if nnp => Ok(Some(f)),
            _ => Ok(None),
        }
    }
}

/// `--preserve-fds N`: fds 3 to 3+N-1 go to the container. Called first thing, before
/// berth opens anything, so that none of berth's own descriptors (its log, the state
/// directory it locks, the exec fifo, the setup channel) can land in that range: there
/// the init would hold the state lock until exec (a `start` waiting on it deadlocks), or
/// a host directory would reach the container. A number in the range that is not open is
/// filled with /dev/null, as the container is promised an fd there.
pub fn reserve_preserved_fds(n: u32) {
    for fd in 3..3u32.saturating_add(n).min(i32::MAX as u32) {
        let fd = fd as i32;
        // SAFETY: F_GETFD only reads the flags of an fd number; EBADF if it is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDWR, Mode::empty()) else {
            return;
        };
        use std::os::fd::IntoRawFd;
        let raw = null.into_raw_fd();
        if raw != fd {
            // SAFETY: dup2 onto a number that is not open (checked above); `raw` is ours
            // and is closed right after.
            unsafe {
                libc::dup2(raw, fd);
                libc::close(raw);
            }
        }
    }
}

/// Closes every fd from `first` up except `keep`.
pub(crate) fn close_fds_except(first: i32, keep: &[i32]) -> Result<()> {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .ctx(|| "list /proc/self/fd".into())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: closing an fd of our own that no Rust object in this process will use
            // again: the forked child only uses the channel and namespace fds it keeps.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Marks every fd from `first` up close-on-exec: no runtime fd reaches the container.
pub(crate) fn close_fds_on_exec(first: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of fds in our own table.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if Errno::result(rc).is_ok() {
        return Ok(());
    }
    // Older kernels: walk /proc/self/fd.
    let dir = fs::read_dir("/proc/self/fd").ctx(|| "list /proc/self/fd to close fds".into())?;
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd: &i32| *fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on an fd number of our own; a closed one gives EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

pub(crate) fn exec(exe: &Path, args: &[String], env: &[String]) -> Result<Never> {
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| Error::Init(format!("{what} {s:?} contains a NUL byte")))
    };
    let path = cstr(&exe.to_string_lossy(), "process.args[0]")?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstr(a, "process.args"))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|e| cstr(e, "process.env"))
        .collect::<Result<_>>()?;
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(Error::sys(format!("exec {}", exe.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_container_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(lookup_path("sh", &env).unwrap(), PathBuf::from("/bin/sh"));
        let e = lookup_path("no-such-cmd-xyz", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        let e = lookup_path("/etc/passwd", &env).unwrap_err().to_string();
        assert!(e.contains("permission denied"), "{e}");
        let e = lookup_path("/nope/x", &env).unwrap_err().to_string();
        assert!(e.contains("no such file or directory"), "{e}");
    }
}
