//! The lifecycle operations: create, start, state, kill, delete, list. Each takes the
//! per-container lock for its whole run, so concurrent commands on one id are serialised.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use crate::caps::CapSets;
use crate::channel::{Channel, Msg};
use crate::clone::Spawned;
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::init::{self, InitConfig};
use crate::namespace::{self, Namespaces};
use crate::rootfs::CgroupHierarchy;
use crate::spec::{self, Bundle};
use crate::state::{self, Op, Saved, StateDir, Status};

/// Where state lives and how cgroups are named; from the global flags.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// Rootless mode: berth has no privilege on the host beyond the caller's. User
    /// namespace maps are written the unprivileged way (or by newuidmap/newgidmap), and
    /// cgroups are used only where the caller may write (a delegated tree).
    pub rootless: bool,
}

/// What happens to the pty master of a terminal container.
#[derive(Debug, Clone)]
pub enum ConsoleTarget {
    /// Send it to this AF_UNIX socket (runc's --console-socket).
    Socket(PathBuf),
    /// Hand it back to the caller (`run` in the foreground proxies it).
    Return,
}

#[derive(Debug, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub console: Option<ConsoleTarget>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// The container process's stdio, where not the caller's own (a monitor such as
    /// berth-shim gives pipes it reads).
    pub stdio: crate::process::Stdio,
}

/// A container that `create` left waiting for `start`.
#[derive(Debug)]
pub struct Created {
    pub pid: i32,
    pub console_master: Option<OwnedFd>,
}

impl Runtime {
    /// Validates everything, then builds the container up to the exec fifo. On any error
    /// nothing is left: no process, cgroup or state directory.
    pub fn create(&self, o: &CreateOptions) -> Result<Created> {
        state::validate_id(&o.id)?;
        let bundle = spec::load_bundle(&o.bundle)?;
        let sp = &bundle.spec;
        let linux = sp.linux().as_ref().expect("validated");
        let process = sp.process().as_ref().expect("validated");
        let ns = Namespaces::from_spec(linux.namespaces().as_deref().unwrap_or(&[]))
            .map_err(|r| cfg_err(&bundle, "linux.namespaces", r))?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && o.console.is_none() {
            return Err(cfg_err(
                &bundle,
                "process.terminal",
                "a terminal needs --console-socket (or `run` in the foreground)".into(),
            ));
        }
        let seccomp = match linux.seccomp() {
            Some(s) => Some(berth_seccomp::compile(s)?),
            None => None,
        };
        let caps = process
            .capabilities()
            .as_ref()
            .map(CapSets::from_spec)
            .unwrap_or_else(CapSets::empty);
        let cgroup = berth_cgroups::Manager::new(&berth_cgroups::CgroupSetup {
            cgroups_path: linux.cgroups_path().as_deref(),
            container_id: &o.id,
            systemd: self.systemd_cgroup,
        })?;
        let mut resources = cgroup_resources(linux);
        if self.rootless {
            // Device rules need privilege to enforce; an unprivileged user can make no
            // device node to begin with.
            resources.set_devices(None);
        }
        let cgroup = match self.rootless {
            false => Some(cgroup),
            true => crate::rootless::usable_cgroup(cgroup, linux)
                .map_err(|r| cfg_err(&bundle, "linux.resources", r))?,
        };
        if let Some(cg) = &cgroup {
            cg.validate(&resources)?;
        }
        let ns_files = namespace::open_joined(&ns)?;
        let host_mounts = match ns.has(LinuxNamespaceType::Mount) {
            true => None,
            false => Some(crate::rootfs::hostns::mounts_below(&bundle.rootfs)?),
        };

        let dir = StateDir::create(&self.root, &o.id)?;
        let mut guard = CreateGuard {
            dir: Some(dir),
            cgroup: None,
            pid: None,
            host_mounts: host_mounts
                .clone()
                .map(|before| (bundle.rootfs.clone(), before)),
        };
        let mut saved = Saved {
            oci_version: sp.version().clone(),
            id: o.id.clone(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: state::now_rfc3339(),
            owner: owner_name(),
            annotations: sp.annotations().clone().unwrap_or_default(),
            cgroup: cgroup.clone(),
            own_pid_ns: ns.creates(LinuxNamespaceType::Pid),
            hooks: sp.hooks().clone(),
            host_mounts,
            status: Status::Creating,
        };
        let dir = guard.dir.as_ref().expect("set above");
        dir.save(&saved)?;
        dir.save_config(sp)?;
        let fifo = dir.fifo();
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .ctx(|| format!("mkfifo {}", fifo.display()))?;
        let uid0 = host_id_of_root(linux.uid_mappings().as_deref());
        let gid0 = host_id_of_root(linux.gid_mappings().as_deref());
        nix::unistd::chown(
            &fifo,
            Some(nix::unistd::Uid::from_raw(uid0)),
            Some(nix::unistd::Gid::from_raw(gid0)),
        )
        .ctx(|| format!("chown {}", fifo.display()))?;

        if let Some(cg) = &cgroup {
            cg.create()?;
            guard.cgroup = Some(cg.clone());
            cg.apply_resources(&resources)?;
        }
        let hierarchies = cgroup.as_ref().map(cgroup_view).unwrap_or_default();
        let idmapped = crate::rootfs::idmap::prepare_all(sp)?;

        let cfg = InitConfig {
            id: &o.id,
            spec: sp,
            rootfs: &bundle.rootfs,
            bundle: &bundle.dir,
            ns,
            ns_files,
            fifo,
            no_pivot: o.no_pivot,
            no_new_keyring: o.no_new_keyring,
            preserve_fds: o.preserve_fds,
            stdio: &o.stdio,
            seccomp,
            cgroups: hierarchies,
            cgroup: cgroup.as_ref(),
            caps,
            idmapped,
        };
        let (parent, child) = Channel::pair()?;
        // The intermediate is born in the cgroup2 directory where the kernel allows it, and
        // moves itself into the v1 hierarchies: no costly migration by pid.
        let cgroup_dir = cgroup
            .as_ref()
            .and_then(|c| c.unified_path())
            .and_then(|p| {
                nix::fcntl::open(
                    &p,
                    nix::fcntl::OFlag::O_RDONLY
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            });
        // SAFETY: berth is single-threaded here, so the child may run arbitrary code.
        let spawned = unsafe { crate::clone::fork_into(cgroup_dir.as_ref().map(|f| f.as_fd())) }?;
        drop(cgroup_dir);
        let stage1 = match spawned {
            Spawned::Child { in_cgroup } => {
                drop(parent);
                init::intermediate(child, &cfg, in_cgroup)
            }
            Spawned::Parent { child: pid } => pid,
        };
        drop(child);
        let res = self.drive(&parent, stage1, &cfg, &bundle, o, &mut guard, &mut saved);
        if res.is_err() {
            // It may be waiting for us (for its id maps): it must not outlive the failure.
            let _ = kill(stage1, Signal::SIGKILL);
        }
        // Reap the intermediate whatever happened.
        let _ = waitpid(stage1, None);
        let console_master = res?;

        if let Some(pf) = &o.pid_file {
            let abs = if pf.is_absolute() {
                pf.clone()
            } else {
                std::env::current_dir().unwrap_or_default().join(pf)
            };
            state::write_atomic(&abs, saved.pid.to_string().as_bytes(), 0o644)?;
        }
        saved.status = Status::Created;
        guard.dir.as_ref().expect("set").save(&saved)?;
        guard.disarm();
        Ok(Created {
            pid: saved.pid,
            console_master,
        })
    }

    /// The parent's side of the setup conversation.
    #[allow(clippy::too_many_arguments)]
    fn drive(
        &self,
        chan: &Channel,
        stage1: Pid,
        cfg: &InitConfig<'_>,
        bundle: &Bundle,
        o: &CreateOptions,
        guard: &mut CreateGuard,
        saved: &mut Saved,
    ) -> Result<Option<OwnedFd>> {
        let linux = bundle.spec.linux().as_ref().expect("validated");
        let mut master = None;
        loop {
            let Some((msg, fd)) = chan.recv()? else {
                return Err(died_during_setup(cfg.cgroup, linux));
            };
            match msg {
                Msg::MapIds => {
                    let (uids, gids) = (
                        linux.uid_mappings().as_deref().unwrap_or(&[]),
                        linux.gid_mappings().as_deref().unwrap_or(&[]),
                    );
                    if self.rootless {
                        crate::rootless::write_id_maps(stage1, uids, gids)?;
                    } else {
                        namespace::write_id_maps(stage1, uids, gids)?;
                    }
                    chan.send(&Msg::IdsMapped)?;
                }
                Msg::InitPid(pid) => {
                    guard.pid = Some(pid);
                    saved.pid = pid;
                    saved.pid_start = state::proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
                }
                Msg::RunHooks => {
                    // Devices first: prestart and createRuntime hooks may configure them.
                    if let Some(d) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) {
                        let netns = crate::netdev::open_netns(saved.pid)?;
                        crate::netdev::move_devices(d, netns.as_fd())?;
                    }
                    // The lifecycle runs these hooks (steps 3 and 4) after the runtime
                    // environment is built (step 2), which is what "created" means; the
                    // OCI validation suite and crun say so too (runc says "creating").
                    let st = self.hook_state(saved, Status::Created);
                    hooks::run_all(hooks::Kind::Prestart, bundle.spec.hooks().as_ref(), &st)?;
                    hooks::run_all(
                        hooks::Kind::CreateRuntime,
                        bundle.spec.hooks().as_ref(),
                        &st,
                    )?;
                    chan.send(&Msg::Resume(saved.pid))?;
                }
                Msg::Console => {
                    let fd =
                        fd.ok_or_else(|| Error::Init("console message without a pty".into()))?;
                    match &o.console {
                        Some(ConsoleTarget::Socket(p)) => {
                            crate::console::send_to_socket(p, fd.as_fd())?
                        }
                        Some(ConsoleTarget::Return) => master = Some(fd),
                        None => {}
                    }
                }
                Msg::SeccompFd => {
                    let fd =
                        fd.ok_or_else(|| Error::Init("seccomp message without an fd".into()))?;
                    let st = serde_json::to_value(saved.report(Status::Creating))
                        .expect("state serializes");
                    crate::notify::send_to_listener(
                        &saved.id,
                        linux.seccomp().as_ref(),
                        saved.pid,
                        st,
                        fd,
                    )?;
                }
                Msg::Ready => break,
                Msg::Failed(e) => return Err(Error::Init(e)),
                other => return Err(Error::Init(format!("unexpected message {other:?}"))),
            }
        }
        Ok(master)
    }

    fn hook_state(&self, saved: &Saved, status: Status) -> Vec<u8> {
        serde_json::to_vec(&saved.report(status)).expect("state serializes")
    }

    /// Releases a created container's init to exec the user process.
    pub fn start(&self, id: &str) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let status = status_of(&dir, &saved);
        status.check(Op::Start)?;
        let fifo = dir.fifo();
        let fd = match nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENXIO) => {
                return Err(Error::Init(
                    "the container's init is no longer waiting (it exited)".into(),
                ))
            }
            Err(e) => return Err(Error::sys(format!("open exec fifo {}", fifo.display()), e)),
        };
        nix::unistd::write(&fd, b"0").ctx(|| "write to the exec fifo".into())?;
        let _ = fs::remove_file(&fifo);
        let has_poststart = saved
            .hooks
            .as_ref()
            .is_some_and(|h| !hooks::Kind::Poststart.select(h).is_empty());
        if !has_poststart {
            return Ok(());
        }
        // Poststart hooks run after the user process has started: the init holds the
        // fifo's read side until exec closes it, which shows here as POLLERR.
        wait_readers_gone(&fd);
        drop(fd);
        let st = self.hook_state(&saved, Status::Running);
        // The spec: a failing poststart hook is logged, and the remaining hooks and the
        // container go on.
        for e in hooks::run_all_warning(hooks::Kind::Poststart, saved.hooks.as_ref(), &st) {
            eprintln!("berth: container {id:?}: warning: {}", e.chain());
        }
        Ok(())
    }

    /// The state JSON of a container.
    pub fn state(&self, id: &str) -> Result<String> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let status = status_of(&dir, &saved);
        Ok(serde_json::to_string_pretty(&saved.report(status)).expect("state serializes"))
    }

    /// Sends `sig` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, id: &str, sig: i32, all: bool) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let status = status_of(&dir, &saved);
        if all {
            if status == Status::Stopped {
                // Processes may outlive the init when the pid namespace is shared; with
                // none left there is nothing to do, and runc says nothing either.
                return match saved.own_pid_ns {
                    true => Ok(()),
                    false => signal_cgroup(&saved, sig),
                };
            }
            status.check(Op::Kill)?;
            return signal_cgroup(&saved, sig);
        }
        status.check(Op::Kill)?;
        signal_init(&saved, sig)
    }

    /// Removes a stopped (or, with force, any) container: processes, cgroup, state.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = match dir.load() {
            Ok(s) => s,
            // A create that died before writing state: nothing else can exist.
            Err(_) if force => return dir.remove(),
            Err(e) => return Err(e),
        };
        let status = status_of(&dir, &saved);
        status.check(if force { Op::ForceDelete } else { Op::Delete })?;
        if matches!(
            status,
            Status::Created | Status::Running | Status::Paused | Status::Creating
        ) {
            if let Some(cg) = &saved.cgroup {
                if status == Status::Paused {
                    let _ = cg.thaw();
                }
            }
            let _ = signal_init(&saved, libc::SIGKILL);
            wait_gone(saved.pid, saved.pid_start, Duration::from_secs(10));
        }
        destroy(dir, &saved)
    }

    /// Applies new cgroup limits to a created, running or paused container. Only what
    /// `r` sets is written.
    pub fn update(&self, id: &str, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let status = status_of(&dir, &saved);
        status.check(Op::Update)?;
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the container has no cgroup to update".into()))?;
        cg.apply_resources(r)?;
        Ok(())
    }

    /// Freezes every process of a running container (v1 freezer, v2 cgroup.freeze).
    pub fn pause(&self, id: &str) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        status_of(&dir, &saved).check(Op::Pause)?;
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the container has no cgroup to freeze".into()))?;
        cg.freeze()?;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        status_of(&dir, &saved).check(Op::Resume)?;
        if let Some(cg) = &saved.cgroup {
            cg.thaw()?;
        }
        Ok(())
    }

    /// The host pids of every process in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        match &saved.cgroup {
            Some(cg) => Ok(cg.pids()?),
            None if status_of(&dir, &saved) != Status::Stopped => Ok(vec![saved.pid]),
            None => Ok(Vec::new()),
        }
    }

    /// All containers under the root, with their status.
    pub fn list(&self) -> Result<Vec<(Saved, Status)>> {
        state::check_root(&self.root)?;
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()), e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let d = e.path();
            let Ok(saved) = state::load_saved(&d) else {
                continue;
            };
            let status = derive_status(&d.join(state::EXEC_FIFO), &saved);
            out.push((saved, status));
        }
        out.sort_by(|a, b| a.0.created.cmp(&b.0.created).then(a.0.id.cmp(&b.0.id)));
        Ok(out)
    }

    /// Waits for the status to become stopped; used by `run`.
    pub fn saved(&self, id: &str) -> Result<Saved> {
        StateDir::open(&self.root, id)?.load()
    }
}

/// The spec's resources plus, as runc adds them, allow rules for the default devices and for
/// every linux.devices entry, after the spec's own device rules.
pub(crate) fn cgroup_resources(
    linux: &oci_spec::runtime::Linux,
) -> oci_spec::runtime::LinuxResources {
    let mut r = linux.resources().clone().unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.extend(berth_cgroups::default_allowed_devices());
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        // A fifo is no device the cgroup controls: made, never ruled (as runc).
        if d.typ() == oci_spec::runtime::LinuxDeviceType::P {
            continue;
        }
        let mut rule = oci_spec::runtime::LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(d.typ()));
        rule.set_major(Some(d.major()));
        rule.set_minor(Some(d.minor()));
        rule.set_access(Some("rwm".to_string()));
        rules.push(rule);
    }
    r.set_devices(Some(rules));
    r
}

/// Why the setup processes went away without a word: the OOM killer, under a memory limit
/// too small for them, or else only that they exited.
fn died_during_setup(
    cgroup: Option<&berth_cgroups::Manager>,
    linux: &oci_spec::runtime::Linux,
) -> Error {
    let oom = cgroup
        .and_then(|c| c.oom_kills().ok().flatten())
        .is_some_and(|n| n > 0);
    if !oom {
        return Error::Init("the container's init exited during setup".into());
    }
    let limit = linux
        .resources()
        .as_ref()
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit());
    Error::Init(match limit {
        Some(l) => format!(
            "the container's init was killed by the OOM killer during setup: \
             linux.resources.memory.limit is {l} bytes, too little to start it"
        ),
        None => "the container's init was killed by the OOM killer during setup".into(),
    })
}

fn cfg_err(b: &Bundle, field: &str, reason: String) -> Error {
    Error::Config {
        file: b.config_path.clone(),
        field: field.to_string(),
        reason,
    }
}

/// Removes what is left once the processes are gone: stray processes, cgroup, poststop
/// hooks, state directory.
fn destroy(dir: StateDir, saved: &Saved) -> Result<()> {
    if let Some(cg) = &saved.cgroup {
        kill_cgroup(cg);
        cg.remove()?;
    }
    if let Some(before) = &saved.host_mounts {
        crate::rootfs::hostns::unmount_new_below(&saved.rootfs, before)?;
    }
    let st = serde_json::to_vec(&saved.report(Status::Stopped)).expect("state serializes");
    for e in hooks::run_all_warning(hooks::Kind::Poststop, saved.hooks.as_ref(), &st) {
        eprintln!("berth: container {:?}: warning: {}", saved.id, e.chain());
    }
    dir.remove()
}

/// SIGKILL to everything in the cgroup (pid-reuse safe: `Manager::signal_all`) until it
/// is empty, thawing it first so the killed can die.
pub(crate) fn kill_cgroup(cg: &berth_cgroups::Manager) {
    for _ in 0..50 {
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            return;
        }
        let _ = cg.thaw();
        let _ = cg.signal_all(libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn status_of(dir: &StateDir, saved: &Saved) -> Status {
    derive_status(&dir.fifo(), saved)
}

/// The status, derived from the init process, the fifo and the freezer.
pub fn derive_status(fifo: &Path, saved: &Saved) -> Status {
    if saved.status == Status::Creating && saved.pid == 0 {
        return Status::Creating;
    }
    if !state::pid_alive(saved.pid, saved.pid_start) {
        return Status::Stopped;
    }
    if saved.status == Status::Creating {
        return Status::Creating;
    }
    if fifo.exists() {
        return Status::Created;
    }
    if let Some(cg) = &saved.cgroup {
        if cg.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
    }
    Status::Running
}

/// Blocks until no process holds the fifo's read side (the init exec'd or died).
fn wait_readers_gone(fd: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {
                if fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
                {
                    return;
                }
            }
        }
    }
}

/// A pidfd of `pid`, readable once the process has exited; `None` if it does not exist.
pub(crate) fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Signals the init through a pidfd, after checking its start time, so a reused pid is
/// never hit.
fn signal_init(saved: &Saved, sig: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let gone = Error::BadState {
        op: Op::Kill,
        status: Status::Stopped,
    };
    let Some(fd) = pidfd(saved.pid) else {
        return Err(gone);
    };
    if !state::pid_alive(saved.pid, saved.pid_start) {
        return Err(gone);
    }
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<u8>(),
            0,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // It exited between the check and the signal: as runc, "container not running".
        Err(Errno::ESRCH) => Err(gone),
        Err(e) => Err(Error::sys(
            format!("send signal {sig} to the init (pid {})", saved.pid),
            e,
        )),
    }
}

fn signal_cgroup(saved: &Saved, sig: i32) -> Result<()> {
    let Some(cg) = &saved.cgroup else {
        return signal_init(saved, sig);
    };
    cg.signal_all(sig)?;
    Ok(())
}

/// Waits at most `limit` for the process to be gone; true if it is.
pub(crate) fn wait_gone(pid: i32, start: u64, limit: Duration) -> bool {
    let t = Instant::now();
    while state::pid_alive(pid, start) {
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn host_id_of_root(maps: Option<&[oci_spec::runtime::LinuxIdMapping]>) -> u32 {
    maps.unwrap_or(&[])
        .iter()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
        .unwrap_or(0)
}

/// The caller's user name from /etc/passwd (no NSS: the release binary is static), else the
/// uid as a number.
pub(crate) fn owner_name() -> String {
    let uid = nix::unistd::getuid().as_raw();
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| user_name_for(&p, uid))
        .unwrap_or_else(|| uid.to_string())
}

fn user_name_for(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// The hierarchies to show at a `cgroup` mount inside the container.
pub(crate) fn cgroup_view(cg: &berth_cgroups::Manager) -> Vec<CgroupHierarchy> {
    use berth_cgroups::CgroupMode;
    let mut out = Vec::new();
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| berth_cgroups::mountinfo::parse_mountinfo(&t).ok())
        .map(|e| berth_cgroups::mountinfo::find_cgroup_mounts(&e))
        .unwrap_or_default();
    if cg.mode() == CgroupMode::Unified {
        if let Some(p) = cg.unified_path() {
            out.push(CgroupHierarchy {
                name: String::new(),
                host_path: p,
                fstype: "cgroup2",
                fs_options: String::new(),
                aliases: Vec::new(),
            });
        }
        return out;
    }
    for m in &mounts.v1 {
        let Some(first) = m.controllers.first() else {
            continue;
        };
        let Some(host_path) = cg.path_for(first) else {
            continue;
        };
        let name = m
            .mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.controllers.join(","));
        let named = first.starts_with("name=");
        let aliases = if m.controllers.len() > 1 {
            m.controllers
                .iter()
                .filter(|c| **c != name)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        out.push(CgroupHierarchy {
            name,
            host_path,
            fstype: "cgroup",
            fs_options: if named {
                format!("none,{first}")
            } else {
                m.controllers.join(",")
            },
            aliases,
        });
    }
    if cg.mode() == CgroupMode::Hybrid {
        if let Some(p) = cg.unified_path() {
            out.push(CgroupHierarchy {
                name: "unified".into(),
                host_path: p,
                fstype: "cgroup2",
                fs_options: String::new(),
                aliases: Vec::new(),
            });
        }
    }
    out
}

/// Undoes a failed create: kills the init, removes the cgroup and the state directory.
struct CreateGuard {
    dir: Option<StateDir>,
    cgroup: Option<berth_cgroups::Manager>,
    pid: Option<i32>,
    /// In the host's mount namespace: the rootfs and the mounts below it before create.
    host_mounts: Option<(PathBuf, Vec<u32>)>,
}

impl CreateGuard {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
        self.host_mounts = None;
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let start = state::proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
            wait_gone(pid, start, Duration::from_secs(5));
        }
        if let Some(cg) = self.cgroup.take() {
            kill_cgroup(&cg);
            let _ = cg.remove();
        }
        if let Some((rootfs, before)) = self.host_mounts.take() {
            let _ = crate::rootfs::hostns::unmount_new_below(&rootfs, &before);
        }
        if let Some(d) = self.dir.take() {
            let _ = d.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_from_passwd() {
        let p = "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/a:/bin/sh\n";
        assert_eq!(user_name_for(p, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name_for(p, 0).as_deref(), Some("root"));
        assert_eq!(user_name_for(p, 5), None);
    }
}
