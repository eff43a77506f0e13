//! The processes `create` forks: the intermediate (joins and makes namespaces, forks the
//! init into them, exits) and the container init (builds the container, reports `Ready`,
//! waits for `start`, execs the user process). Errors travel back over the channel as
//! `Msg::Failed` with the whole chain, so `create` prints them.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::unshare;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::unistd::{setresgid, setresuid, setsid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::caps::CapSets;
use crate::channel::{Channel, Msg};
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::namespace::{self, Namespaces, NsFile};
use crate::process::{close_fds_except, exec, lookup_path, set_dumpable, FinalSetup, Never};
use crate::rootfs::{self, CgroupHierarchy, RootfsContext};
use crate::state::Status;

/// Everything the forked processes need; built by `create` before the first fork.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub ns: Namespaces,
    pub ns_files: Vec<NsFile>,
    pub fifo: PathBuf,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub stdio: &'a crate::process::Stdio,
    pub seccomp: Option<berth_seccomp::Filter>,
    pub cgroups: Vec<CgroupHierarchy>,
    /// The container's cgroup, which the intermediate enters itself (none in rootless
    /// mode without a delegated cgroup).
    pub cgroup: Option<&'a berth_cgroups::Manager>,
    pub caps: CapSets,
    /// Idmapped trees made by `create`, attached by the init.
    pub idmapped: Vec<rootfs::idmap::Prepared>,
}

/// Entry of the intermediate process; never returns.
pub fn intermediate(chan: Channel, cfg: &InitConfig<'_>, in_cgroup: bool) -> ! {
    let code = match run_intermediate(&chan, cfg, in_cgroup) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&Msg::Failed(e.chain()));
            1
        }
    };
    // SAFETY: _exit ends this forked process without running the parent's atexit handlers
    // or flushing its stdio buffers a second time.
    unsafe { libc::_exit(code) }
}

fn run_intermediate(chan: &Channel, cfg: &InitConfig<'_>, in_cgroup: bool) -> Result<()> {
    // Nothing of `create` but what we need may reach the container: above all not the
    // state directory's lock, which would stay held until exec.
    cfg.stdio.install()?;
    let mut keep: Vec<i32> = cfg.ns_files.iter().map(|f| f.raw_fd()).collect();
    keep.extend(cfg.idmapped.iter().map(|p| p.tree.as_raw_fd()));
    keep.push(chan.as_fd().as_raw_fd());
    close_fds_except(3 + cfg.preserve_fds as i32, &keep)?;
    // If `create` dies, so do we.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    set_dumpable(false)?;
    // Into the container's cgroup before the init is forked (it inherits the cgroup) and
    // before the cgroup namespace is made (its root is the cgroup we are in).
    if let Some(cg) = cfg.cgroup {
        cg.enter_self(in_cgroup)?;
    }
    // Join by path first (user first), then make the new ones.
    for f in &cfg.ns_files {
        namespace::join(f)?;
    }
    if cfg.ns.creates(LinuxNamespaceType::User) {
        // An unprivileged parent may write our id maps only while /proc/<pid> is ours,
        // that is while we are dumpable; nothing of the container runs yet.
        set_dumpable(true)?;
        unshare(nix::sched::CloneFlags::CLONE_NEWUSER).ctx(|| "unshare user namespace".into())?;
        chan.send(&Msg::MapIds)?;
        chan.expect(Msg::IdsMapped)?;
        set_dumpable(false)?;
    }
    if cfg.ns.has(LinuxNamespaceType::User) {
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .ctx(|| "become gid 0 in the user namespace".into())?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .ctx(|| "become uid 0 in the user namespace".into())?;
    }
    let flags = cfg.ns.new_flags_except_user();
    if !flags.is_empty() {
        unshare(flags).ctx(|| format!("unshare namespaces {flags:?}"))?;
    }
    if cfg.ns.creates(LinuxNamespaceType::Time) {
        // Non-dumpable, our /proc/self files belong to the host's root, which a root mapped
        // into a user namespace is not: dumpable for the write (nothing of the container
        // runs yet; the init is not forked).
        let userns = cfg.ns.has(LinuxNamespaceType::User);
        if userns {
            set_dumpable(true)?;
        }
        let written = write_time_offsets(cfg.spec);
        if userns {
            set_dumpable(false)?;
        }
        written?;
    }
    // SAFETY: this process is single-threaded (forked from the single-threaded `create`).
    crate::process::fork_after_pid_sent(chan, "fork the container init", |chan| init(chan, cfg))
}

fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    fs::write("/proc/self/timens_offsets", text).ctx(|| "write /proc/self/timens_offsets".into())
}

/// The container init; never returns.
fn init(chan: &Channel, cfg: &InitConfig<'_>) -> ! {
    let mut ready = false;
    match run_init(chan, cfg, &mut ready) {
        Ok(never) => match never {},
        Err(e) => {
            let msg = e.chain();
            if ready {
                // `create` has returned: the container's stderr is where this can be seen.
                eprintln!("berth: container {}: {msg}", cfg.id);
            } else {
                // Before Ready, `create` reports it; if create is already gone (it is
                // tearing the container down), there is nobody to tell.
                let _ = chan.send(&Msg::Failed(msg));
            }
            // SAFETY: ending the forked init without unwinding into the parent's frames.
            unsafe { libc::_exit(127) }
        }
    }
}

fn run_init(chan: &Channel, cfg: &InitConfig<'_>, ready: &mut bool) -> Result<Never> {
    let spec = cfg.spec;
    let process = spec.process().as_ref().expect("validated");
    setsid().ctx(|| "setsid".into())?;

    // The exec fifo lives in the host's state dir: open it before the root changes.
    // Opening the read side without blocking; `start` opens the write side and writes a byte.
    let fifo = nix::fcntl::open(
        &cfg.fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open exec fifo {}", cfg.fifo.display()))?;

    let ctx = RootfsContext {
        spec,
        rootfs: cfg.rootfs,
        cgroups: &cfg.cgroups,
        cgroupns: cfg.ns.has(LinuxNamespaceType::Cgroup),
        userns: cfg.ns.has(LinuxNamespaceType::User),
        idmapped: &cfg.idmapped,
        host_mount_ns: !cfg.ns.has(LinuxNamespaceType::Mount),
    };
    rootfs::prepare(&ctx)?;

    chan.send(&Msg::RunHooks)?;
    let host_pid = match chan.recv()? {
        Some((Msg::Resume(pid), _)) => pid,
        Some((other, _)) => return Err(Error::Init(format!("expected Resume, got {other:?}"))),
        None => return Err(Error::Init("create went away while hooks ran".into())),
    };
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    // Step 5 of the lifecycle, after the environment is built: "created", as for prestart.
    let state = container_state_json(cfg, host_pid, Status::Created);
    hooks::run_all_with_env(
        hooks::Kind::CreateContainer,
        spec.hooks().as_ref(),
        &state,
        &env,
    )?;
    // startContainer hooks run once create has returned: the container is `created`.
    let start_state = container_state_json(cfg, host_pid, Status::Created);

    let how = if !cfg.ns.has(LinuxNamespaceType::Mount) {
        rootfs::RootSwitch::Chroot
    } else if cfg.no_pivot {
        rootfs::RootSwitch::Move
    } else {
        rootfs::RootSwitch::Pivot
    };
    rootfs::switch_root(cfg.rootfs, how)?;

    let console = if process.terminal().unwrap_or(false) {
        Some(crate::console::setup_in_container(
            chan,
            process.console_size().as_ref(),
        )?)
    } else {
        None
    };

    rootfs::finish(spec)?;

    if cfg.ns.creates(LinuxNamespaceType::Network) {
        loopback_up()?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        set_domainname(d)?;
    }
    if !cfg.no_new_keyring {
        join_session_keyring(cfg.id)?;
    }
    if let Some(score) = process.oom_score_adj() {
        fs::write("/proc/self/oom_score_adj", score.to_string())
            .ctx(|| format!("set process.oomScoreAdj {score}"))?;
    }
    crate::rlimit::apply(process.rlimits().as_deref().unwrap_or(&[]))?;
    let linux = spec.linux().as_ref().expect("validated");
    // While the init still has every capability: a real-time policy, a negative nice or the
    // real-time I/O class need CAP_SYS_NICE or CAP_SYS_ADMIN.
    crate::procattr::apply_all(process, linux.personality(), linux.memory_policy())?;

    let args = process.args().as_deref().expect("validated");
    let exe = lookup_path(&args[0], &env)?;

    if let Some(p) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        crate::lsm::apparmor_exec(p)?;
    }
    if let Some(l) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        crate::lsm::selinux_exec(l)?;
    }

    let late_filter = FinalSetup {
        process,
        caps: &cfg.caps,
        seccomp: cfg.seccomp.as_ref(),
        console: console.as_ref(),
        preserve_fds: cfg.preserve_fds,
    }
    .run(chan)?;
    chan.send(&Msg::Ready)?;
    *ready = true;

    wait_for_start(&fifo)?;
    // The fifo stays open (close-on-exec) until exec: `start` sees the read side close and
    // only then runs the poststart hooks. startContainer hooks are the container's own
    // binaries: they run under the filter too.
    if let Some(f) = late_filter {
        f.load()?;
    }
    hooks::run_all_with_env(
        hooks::Kind::StartContainer,
        spec.hooks().as_ref(),
        &start_state,
        &env,
    )?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "reset signal mask".into())?;
    exec(&exe, args, &env)
}

fn container_state_json(cfg: &InitConfig<'_>, pid: i32, status: Status) -> Vec<u8> {
    let annotations = cfg.spec.annotations().clone().unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": cfg.spec.version(),
        "id": cfg.id,
        "status": status,
        "pid": pid,
        "bundle": cfg.bundle,
        "annotations": annotations,
    }))
    .expect("state serializes")
}

/// A new network namespace starts with `lo` down; bring it up, as runc does, so that
/// 127.0.0.1 works in a container that has no other network.
fn loopback_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx(|| "open a socket to bring lo up".into())?;
    // SAFETY: an all-zero ifreq is a valid value; the name is set below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq, valid for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc).ctx(|| "read the flags of lo".into())?;
    // SAFETY: after SIOCGIFFLAGS the union holds the flags; we set IFF_UP in them.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq, valid for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(rc).map(drop).ctx(|| "bring lo up".into())
}

fn set_domainname(d: &str) -> Result<()> {
    // SAFETY: setdomainname reads `len` bytes from the pointer, which is valid for them.
    let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
    Errno::result(rc)
        .map(drop)
        .ctx(|| format!("set domainname {d:?}"))
}

fn join_session_keyring(id: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(format!("_ses.{id}")).expect("ids have no NUL");
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, name) reads the NUL-terminated name only.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // No keyrings in this kernel, or not allowed here: runc carries on too.
        Err(Errno::ENOSYS) | Err(Errno::EACCES) | Err(Errno::EPERM) => Ok(()),
        Err(e) => Err(Error::sys("join a new session keyring", e)),
    }
}

/// Blocks until `start` writes to the exec fifo.
fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("wait on the exec fifo", e)),
        }
        let mut b = [0u8; 1];
        match nix::unistd::read(fifo, &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("read the exec fifo", e)),
        }
    }
}
