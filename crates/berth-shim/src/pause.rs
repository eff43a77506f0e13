//! The pod's infra process: a fork of the shim that makes (or joins) the pod's namespaces
//! and then only waits. No image and no exec: it costs the pages it dirties. Its
//! namespaces are pinned by bind mounts under the shim's directory, so containers join them
//! by path and they outlive the pause if it dies.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_shim::SandboxSpec;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

/// The namespace kinds a pod's containers share, as /proc/<pid>/ns names them.
pub const SHARED: [&str; 4] = ["net", "ipc", "uts", "pid"];

/// Starts the pause for `spec`; returns its pid (a child of the shim, which reaps it).
pub fn start(spec: &SandboxSpec) -> Result<i32, String> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded, so the child may run any code.
    match unsafe { fork() }.map_err(|e| format!("fork the pause: {e}"))? {
        ForkResult::Parent { child } => {
            drop(w);
            let mut said = Vec::new();
            let _ = std::io::Read::read_to_end(&mut fs::File::from(r), &mut said);
            let said = String::from_utf8_lossy(&said).into_owned();
            if let Some(pid) = said.strip_prefix("pid ") {
                if spec.pid {
                    // The middle process has exited; the pause is ours (subreaper).
                    let _ = waitpid(child, None);
                }
                return pid
                    .trim()
                    .parse()
                    .map_err(|_| format!("the pause said {said:?}"));
            }
            let _ = waitpid(child, None);
            Err(if said.is_empty() {
                "the pause exited before it was ready".into()
            } else {
                said
            })
        }
        ForkResult::Child => {
            drop(r);
            let report = |msg: String| {
                let _ = nix::unistd::write(&w, msg.as_bytes());
                // SAFETY: ending the forked child without running the shim's exit code.
                unsafe { libc::_exit(1) }
            };
            if let Err(e) = enter(spec) {
                report(e);
            }
            if spec.pid {
                // The first child of a new pid namespace is its init: the pause.
                // SAFETY: still single-threaded.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        drop(w);
                        wait_forever()
                    }
                    Ok(ForkResult::Parent { child }) => {
                        let _ = nix::unistd::write(&w, format!("pid {child}").as_bytes());
                        // SAFETY: the middle process ends here.
                        unsafe { libc::_exit(0) }
                    }
                    Err(e) => report(format!("fork into the pod's pid namespace: {e}")),
                }
            }
            let me = nix::unistd::getpid();
            let _ = nix::unistd::write(&w, format!("pid {me}").as_bytes());
            drop(w);
            wait_forever()
        }
    }
}

/// In the forked child: joins or makes the namespaces.
fn enter(spec: &SandboxSpec) -> Result<(), String> {
    if let Some(netns) = &spec.netns {
        let f = nix::fcntl::open(
            netns.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open network namespace {}: {e}", netns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join network namespace {}: {e}", netns.display()))?;
    }
    let mut flags = CloneFlags::empty();
    if spec.net && spec.netns.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if spec.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if spec.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if spec.pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    unshare(flags).map_err(|e| format!("make the pod's namespaces: {e}"))?;
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up().map_err(|e| format!("bring up lo in the pod's network namespace: {e}"))?;
    }
    if let Some(h) = &spec.hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("set hostname {h:?}: {e}"))?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace (a new one has it down).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into it; `req`
    // is a live, properly sized ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the flags member of the union just above.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, a live ifreq naming lo with the new flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pause: reaps what is reparented to it (as a pid namespace's init must) and ends on
/// SIGTERM, SIGINT or SIGKILL.
fn wait_forever() -> ! {
    // Nothing of the shim's is needed any more.
    // SAFETY: close_range on this process's own descriptor table from 3 up.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let mut all = SigSet::all();
    all.remove(Signal::SIGKILL);
    all.remove(Signal::SIGSTOP);
    let _ = all.thread_set_mask();
    loop {
        match all.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) | Ok(Signal::SIGHUP) => {
                // SAFETY: the pause ends.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

/// Bind-mounts the pause's namespaces of the kinds `spec` made onto `DIR/ns/<kind>`;
/// returns the pinned paths by kind.
pub fn pin(dir: &Path, pid: i32, spec: &SandboxSpec) -> Result<Vec<(String, PathBuf)>, String> {
    let ns_dir = dir.join("ns");
    fs::create_dir_all(&ns_dir).map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    share_dir(&ns_dir)?;
    let mut out = Vec::new();
    for kind in SHARED {
        let made = match kind {
            "net" => spec.net && spec.netns.is_none(),
            "ipc" => spec.ipc,
            "uts" => spec.hostname.is_some(),
            _ => spec.pid,
        };
        if !made {
            continue;
        }
        let target = ns_dir.join(kind);
        let _: OwnedFd = nix::fcntl::open(
            target.as_path(),
            OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("create {}: {e}", target.display()))?;
        let source = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        mount(
            Some(source.as_path()),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("pin {} on {}: {e}", source.display(), target.display()))?;
        out.push((kind.to_string(), target));
    }
    Ok(out)
}

/// Unpins every namespace under `DIR/ns` (idempotent).
pub fn unpin(dir: &Path) {
    for kind in SHARED {
        let p = dir.join("ns").join(kind);
        let _ = umount2(p.as_path(), MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&p);
    }
    let _ = umount2(dir.join("ns").as_path(), MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(dir.join("ns"));
}

/// Makes `dir` a mount point of its own with shared propagation, as `ip netns` does for
/// /run/netns: a mount namespace made later (a container's, anyone's `unshare -m`) gets
/// the pins as peers, so unpinning here unpins there too and the namespaces are freed,
/// instead of living on in every copy.
fn share_dir(dir: &Path) -> Result<(), String> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind-mount {} onto itself: {e}", dir.display()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| format!("make {} shared: {e}", dir.display()))
}
