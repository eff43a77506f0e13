//! `exec`: a new process in a running container. It joins every namespace of the container
//! through the init's /proc/<pid>/ns files (user namespace first), enters the container's
//! cgroup, and is set up as the init was — rlimits, LSM labels, bounding set,
//! no_new_privs, seccomp, user, capabilities, cwd — before it execs.
//!
//! Processes: `berth exec` (P) forks an intermediate (S) that joins the namespaces and forks
//! the process (I) into the joined pid namespace, then exits. P waits on I when not
//! detached (as a subreaper, which the caller arranges).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{setresgid, setresuid, setsid, Gid, Pid, Uid};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, LinuxNamespaceType, Process};

use crate::caps::CapSets;
use crate::channel::{Channel, Msg};
use crate::clone::Spawned;
use crate::container::{ConsoleTarget, Runtime};
use crate::error::{Context, Error, Result};
use crate::namespace::{self, type_name};
use crate::process::{self, Never};
use crate::state::{self, Op, StateDir, Status};

/// What `berth exec` asks for.
#[derive(Debug)]
pub struct ExecOptions {
    pub id: String,
    /// The process to run, complete (see [`Runtime::exec_process`] to build one from the
    /// container's own process and command-line overrides).
    pub process: Process,
    pub console: Option<ConsoleTarget>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    pub ignore_paused: bool,
    /// `--cgroup`: sub-cgroups of the container's to run in, `[controller[,controller]:]path`.
    pub sub_cgroups: Vec<String>,
    /// The process's stdio, where not the caller's own.
    pub stdio: crate::process::Stdio,
    /// Make the process a session (and process group) leader even without a terminal, so
    /// that a monitor can kill it with all it started (CRI ExecSync timeouts).
    pub new_session: bool,
}

/// Overrides of the container's process, as `exec`'s flags give them.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, Option<u32>)>,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
}

/// A process started by exec.
#[derive(Debug)]
pub struct Execed {
    pub pid: i32,
    pub console_master: Option<OwnedFd>,
}

struct ExecConfig<'a> {
    process: &'a Process,
    ns_files: Vec<namespace::NsFile>,
    userns: bool,
    /// The `cgroup.procs`/`tasks` files to write `0` to, each in the container's cgroup or
    /// the sub-cgroup `--cgroup` named for it.
    entry_files: Vec<PathBuf>,
    /// The container is paused: join its (frozen) cgroup only after Ready, as the last
    /// step before exec, or setup would freeze before it could report.
    late_cgroup: bool,
    /// With `late_cgroup`: the cgroup entry files, opened on the host before any setns.
    late_files: Vec<OwnedFd>,
    seccomp: Option<berth_seccomp::Filter>,
    caps: CapSets,
    preserve_fds: u32,
    stdio: &'a crate::process::Stdio,
    new_session: bool,
    personality: Option<oci_spec::runtime::LinuxPersonality>,
    memory_policy: Option<oci_spec::runtime::LinuxMemoryPolicy>,
    /// The init's root, for a container without a mount namespace of its own: entered
    /// with chroot, as joining the namespace does for the others.
    chroot: Option<OwnedFd>,
}

impl Runtime {
    /// The container's own process with `o` applied ([`apply_overrides`]).
    pub fn exec_process(&self, id: &str, o: &ProcessOverrides) -> Result<Process> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let spec = dir.config(&saved)?;
        apply_overrides(spec.process().clone().unwrap_or_default(), o)
    }

    /// Starts `o.process` inside the running container `o.id`. Returns once the process is
    /// about to exec, with its host pid.
    pub fn exec(&self, o: &ExecOptions) -> Result<Execed> {
        let p = &o.process;
        match p.args().as_deref() {
            None | Some([]) => {
                return Err(Error::Unsupported("process.args must not be empty".into()))
            }
            Some([first, ..]) if first.is_empty() => {
                return Err(Error::Unsupported(
                    "process.args[0] must not be empty".into(),
                ))
            }
            _ => {}
        }
        if p.terminal().unwrap_or(false) && o.console.is_none() {
            return Err(Error::Unsupported(
                "a terminal needs --console-socket (or exec in the foreground)".into(),
            ));
        }
        for r in p.rlimits().as_deref().unwrap_or(&[]) {
            crate::rlimit::check_against_host(r)
                .map_err(|reason| Error::Unsupported(format!("process.rlimits: {reason}")))?;
        }
        let dir = StateDir::open(&self.root, &o.id)?;
        let saved = dir.load()?;
        let status = crate::container::derive_status(&dir.fifo(), &saved);
        let paused = status == Status::Paused;
        if !(paused && o.ignore_paused) {
            status.check(Op::Exec)?;
        }
        let spec = dir.config(&saved)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let (ns_files, chroot) = init_namespaces(saved.pid)?;
        let userns = ns_files.iter().any(|f| f.typ() == LinuxNamespaceType::User);
        if !state::pid_alive(saved.pid, saved.pid_start) {
            return Err(Error::BadState {
                op: Op::Exec,
                status: Status::Stopped,
            });
        }
        let seccomp = match linux.seccomp() {
            Some(s) => Some(berth_seccomp::compile(s)?),
            None => None,
        };
        let caps = p
            .capabilities()
            .as_ref()
            .map(CapSets::from_spec)
            .unwrap_or_else(CapSets::empty);
        let entry_files = match saved.cgroup.as_ref() {
            Some(cg) => sub_cgroup_entries(cg, &o.sub_cgroups)?,
            None if !o.sub_cgroups.is_empty() => {
                return Err(Error::Unsupported(format!(
                    "--cgroup: container {} has no cgroup",
                    o.id
                )))
            }
            None => Vec::new(),
        };
        let late_files = if paused {
            entry_files
                .iter()
                .map(|f| {
                    open(f, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                        .ctx(|| format!("open {}", f.display()))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        // The cgroup2 directory to be born in (clone3 CLONE_INTO_CGROUP).
        let unified_dir = saved
            .cgroup
            .as_ref()
            .and_then(|c| c.unified_path())
            .and_then(|_| entry_files.iter().find(|f| f.ends_with(CGROUP_PROCS)))
            .and_then(|f| f.parent().map(Path::to_path_buf));
        let cfg = ExecConfig {
            process: p,
            ns_files,
            userns,
            entry_files,
            late_cgroup: paused,
            late_files,
            seccomp,
            caps,
            preserve_fds: o.preserve_fds,
            stdio: &o.stdio,
            new_session: o.new_session,
            personality: linux.personality().clone(),
            memory_policy: linux.memory_policy().clone(),
            chroot,
        };
        let cgroup_dir = unified_dir.filter(|_| !paused).and_then(|p| {
            open(
                &p,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()
        });
        // execCPUAffinity.initial: where the runtime's side runs until the move into the
        // container's cgroup; the forked processes inherit it.
        if let Some(l) = p
            .exec_cpu_affinity()
            .as_ref()
            .and_then(|a| a.initial().as_deref())
        {
            crate::procattr::apply_cpu_affinity("process.execCPUAffinity.initial", l)?;
        }
        let (parent, child) = Channel::pair()?;
        // SAFETY: berth is single-threaded here, so the child may run arbitrary code.
        let spawned = unsafe { crate::clone::fork_into(cgroup_dir.as_ref().map(|f| f.as_fd())) }?;
        let stage1 = match spawned {
            Spawned::Child { in_cgroup } => {
                drop(parent);
                intermediate(child, &cfg, in_cgroup)
            }
            Spawned::Parent { child: pid } => pid,
        };
        drop(child);
        drop(cgroup_dir);
        let listener = Listener {
            id: &o.id,
            seccomp: linux.seccomp().as_ref(),
            state: serde_json::to_value(saved.report(Status::Running)).expect("state serializes"),
        };
        let res = drive(&parent, o, &listener);
        let _ = waitpid(stage1, None);
        let (pid, master) = match res {
            Ok(r) => r,
            Err((pid, e)) => {
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(e);
            }
        };
        if let Some(cg) = saved.cgroup.as_ref().filter(|_| paused) {
            wait_in_cgroup(cg, pid)?;
        }
        if let Some(pf) = &o.pid_file {
            let abs = if pf.is_absolute() {
                pf.clone()
            } else {
                std::env::current_dir().unwrap_or_default().join(pf)
            };
            state::write_atomic(&abs, pid.to_string().as_bytes(), 0o644)?;
        }
        Ok(Execed {
            pid,
            console_master: master,
        })
    }
}

const CGROUP_PROCS: &str = "cgroup.procs";

/// The files an exec process writes `0` to, to join the container's cgroup, with the
/// sub-cgroups of `--cgroup` (`[controller[,controller]:]path`, relative to the
/// container's cgroup, existing) in place of the container's own where they apply.
fn sub_cgroup_entries(cg: &berth_cgroups::Manager, subs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = cg.self_entry_files(false);
    for s in subs {
        let bad = |why: String| Error::Unsupported(format!("--cgroup {s:?}: {why}"));
        let (controllers, path) = match s.split_once(':') {
            Some((c, p)) => (Some(c), p),
            None => (None, s.as_str()),
        };
        // Relative to the container's cgroup, as runc reads it: "/" is that cgroup itself.
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            continue;
        }
        let rel = Path::new(path);
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(
                "the path must be relative to the container's cgroup, without . or ..".into(),
            ));
        }
        let dirs = match controllers {
            None => cg.cgroup_dirs(),
            Some(list) => list
                .split(',')
                .map(|c| {
                    cg.path_for(c)
                        .ok_or_else(|| bad(format!("the container has no {c} cgroup")))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        for dir in dirs {
            let sub = dir.join(rel);
            if !sub.is_dir() {
                return Err(bad(format!(
                    "{} does not exist (exec joins an existing sub-cgroup)",
                    sub.display()
                )));
            }
            for f in files.iter_mut() {
                if f.parent() == Some(dir.as_path()) {
                    let name = f.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                    *f = sub.join(name);
                }
            }
        }
    }
    Ok(files)
}

/// Waits (bounded) until `pid` shows in the cgroup: the process joins a paused container's
/// cgroup only after it reported Ready.
fn wait_in_cgroup(cg: &berth_cgroups::Manager, pid: i32) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if cg.pids()?.contains(&pid) {
            return Ok(());
        }
        if state::proc_stat(pid).is_none_or(|s| s.state == 'Z') {
            return Err(Error::Exec(
                "the process exited before it joined the container's cgroup".into(),
            ));
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Exec(format!(
                "process {pid} did not join the container's cgroup"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

type DriveError = (Option<i32>, Error);

/// Where a seccomp notify fd goes, and the container state sent with it.
struct Listener<'a> {
    id: &'a str,
    seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    state: serde_json::Value,
}

fn drive(
    chan: &Channel,
    o: &ExecOptions,
    listener: &Listener<'_>,
) -> std::result::Result<(i32, Option<OwnedFd>), DriveError> {
    let mut pid = None;
    let mut master = None;
    loop {
        let msg = chan.recv().map_err(|e| (pid, e))?;
        let Some((msg, fd)) = msg else {
            return Err((
                pid,
                Error::Init("the exec process exited during setup".into()),
            ));
        };
        match msg {
            Msg::InitPid(p) => pid = Some(p),
            Msg::Console => {
                let fd =
                    fd.ok_or_else(|| (pid, Error::Init("console message without a pty".into())))?;
                match &o.console {
                    Some(ConsoleTarget::Socket(p)) => {
                        crate::console::send_to_socket(p, fd.as_fd()).map_err(|e| (pid, e))?
                    }
                    Some(ConsoleTarget::Return) => master = Some(fd),
                    None => {}
                }
            }
            Msg::SeccompFd => {
                let fd =
                    fd.ok_or_else(|| (pid, Error::Init("seccomp message without an fd".into())))?;
                let p = pid.ok_or((None, Error::Init("seccomp fd before the pid".into())))?;
                crate::notify::send_to_listener(
                    listener.id,
                    listener.seccomp,
                    p,
                    listener.state.clone(),
                    fd,
                )
                .map_err(|e| (pid, e))?;
            }
            Msg::Ready => {
                let p = pid.ok_or((
                    None,
                    Error::Init("exec process ready before its pid came".into()),
                ))?;
                return Ok((p, master));
            }
            Msg::Failed(e) => return Err((pid, Error::Exec(e))),
            other => return Err((pid, Error::Init(format!("unexpected message {other:?}")))),
        }
    }
}

fn proc_ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The init's namespaces that are not ours, to join (opened while its start time still
/// matches), and its root when its mount namespace is ours (entered with chroot instead).
/// What the kernel says, not what a config says: the config may have changed since
/// create (threat model F5), and an unlisted namespace is the host's anyway.
fn init_namespaces(pid: i32) -> Result<(Vec<namespace::NsFile>, Option<OwnedFd>)> {
    let mut ns_files = Vec::new();
    let mut same_mount_ns = false;
    for t in namespace::ORDER {
        let name = proc_ns_name(t);
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let fd = match open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            // A kernel without this kind of namespace.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!(
                        "open the container's {} namespace {}",
                        type_name(t),
                        path.display()
                    ),
                    e,
                ))
            }
        };
        let theirs = nix::sys::stat::fstat(&fd).ctx(|| format!("stat {}", path.display()))?;
        let ours = nix::sys::stat::stat(format!("/proc/self/ns/{name}").as_str())
            .ctx(|| format!("stat /proc/self/ns/{name}"))?;
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino) {
            same_mount_ns |= t == LinuxNamespaceType::Mount;
            continue;
        }
        ns_files.push(namespace::NsFile::from_fd(t, path, fd));
    }
    let chroot = match same_mount_ns {
        false => None,
        true => {
            let path = format!("/proc/{pid}/root");
            Some(
                open(
                    path.as_str(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open the container's root {path}"))?,
            )
        }
    };
    Ok((ns_files, chroot))
}

fn intermediate(chan: Channel, cfg: &ExecConfig<'_>, in_cgroup: bool) -> ! {
    let code = match run_intermediate(&chan, cfg, in_cgroup) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&Msg::Failed(e.chain()));
            1
        }
    };
    // SAFETY: _exit ends this forked process without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

fn run_intermediate(chan: &Channel, cfg: &ExecConfig<'_>, in_cgroup: bool) -> Result<()> {
    cfg.stdio.install()?;
    let mut keep: Vec<i32> = cfg.ns_files.iter().map(|f| f.raw_fd()).collect();
    keep.extend(cfg.late_files.iter().map(|f| f.as_raw_fd()));
    keep.extend(cfg.chroot.iter().map(|f| f.as_raw_fd()));
    keep.push(chan.as_fd().as_raw_fd());
    process::close_fds_except(3 + cfg.preserve_fds as i32, &keep)?;
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Non-dumpable until exec: container processes cannot reach our memory or
    // /proc/<pid>/exe while we run inside their namespaces.
    process::set_dumpable(false)?;
    if !cfg.late_cgroup {
        for f in &cfg.entry_files {
            if in_cgroup && f.ends_with(CGROUP_PROCS) {
                continue;
            }
            fs::write(f, "0").ctx(|| format!("join the container's cgroup via {}", f.display()))?;
        }
    }
    // Before any namespace is joined: chroot needs CAP_SYS_CHROOT over the host's mount
    // namespace, which a joined user namespace would not give.
    if let Some(root) = &cfg.chroot {
        nix::unistd::fchdir(root).ctx(|| "enter the container's root".into())?;
        nix::unistd::chroot(".").ctx(|| "chroot into the container's root".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir / in the container's root".into())?;
    }
    for f in &cfg.ns_files {
        namespace::join(f)?;
    }
    if cfg.userns {
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .ctx(|| "become gid 0 in the container's user namespace".into())?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .ctx(|| "become uid 0 in the container's user namespace".into())?;
    }
    crate::process::fork_after_pid_sent(chan, "fork the exec process", |chan| exec_child(chan, cfg))
}

fn exec_child(chan: &Channel, cfg: &ExecConfig<'_>) -> ! {
    let mut ready = false;
    let Err(e) = run_exec_child(chan, cfg, &mut ready);
    if ready {
        eprintln!("berth: exec: {}", e.chain());
    } else {
        let _ = chan.send(&Msg::Failed(e.chain()));
    }
    // SAFETY: ending the forked process without unwinding into the parent's frames.
    unsafe { libc::_exit(127) }
}

fn run_exec_child(chan: &Channel, cfg: &ExecConfig<'_>, ready: &mut bool) -> Result<Never> {
    let p = cfg.process;
    let console = if p.terminal().unwrap_or(false) {
        setsid().ctx(|| "setsid".into())?;
        Some(crate::console::open_pty(chan, p.console_size().as_ref())?)
    } else {
        if cfg.new_session {
            setsid().ctx(|| "setsid".into())?;
        }
        None
    };
    crate::rlimit::apply(p.rlimits().as_deref().unwrap_or(&[]))?;
    crate::procattr::apply_all(p, &cfg.personality, &cfg.memory_policy)?;
    let env: Vec<String> = p.env().clone().unwrap_or_default();
    let args = p.args().as_deref().expect("checked");
    let exe = process::lookup_path(&args[0], &env)?;
    if let Some(a) = p.apparmor_profile().as_deref().filter(|a| !a.is_empty()) {
        crate::lsm::apparmor_exec(a)?;
    }
    if let Some(l) = p.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        crate::lsm::selinux_exec(l)?;
    }
    let late_filter = process::FinalSetup {
        process: p,
        caps: &cfg.caps,
        seccomp: cfg.seccomp.as_ref(),
        console: console.as_ref(),
        preserve_fds: cfg.preserve_fds,
    }
    .run(chan)?;
    chan.send(&Msg::Ready)?;
    *ready = true;
    for f in &cfg.late_files {
        // Into the paused container's cgroup: frozen here until it is resumed.
        nix::unistd::write(f, b"0").ctx(|| "join the paused container's cgroup".into())?;
    }
    // execCPUAffinity.final: after the move into the cgroup, which resets the affinity
    // to the cgroup's cpuset.
    if let Some(l) = p
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.cpu_affinity_final().as_deref())
    {
        crate::procattr::apply_cpu_affinity("process.execCPUAffinity.final", l)?;
    }
    if let Some(f) = late_filter {
        f.load()?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "reset signal mask".into())?;
    process::exec(&exe, args, &env)
}

/// `p` (a container's own process) with `o` applied, as runc's exec builds it when no
/// --process is given: args replaced, env appended (a key given again wins), user, cwd,
/// terminal, extra capabilities added to every set but inheritable (CVE-2022-29162),
/// no_new_privs, labels.
pub fn apply_overrides(mut p: Process, o: &ProcessOverrides) -> Result<Process> {
    if o.args.is_empty() {
        return Err(Error::Unsupported(
            "exec needs a command (or --process)".into(),
        ));
    }
    p.set_args(Some(o.args.clone()));
    let mut env = p.env().clone().unwrap_or_default();
    for e in &o.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &o.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut user = p.user().clone();
    if let Some((uid, gid)) = o.user {
        user.set_uid(uid);
        user.set_gid(gid.unwrap_or(0));
    }
    if !o.additional_gids.is_empty() {
        user.set_additional_gids(Some(o.additional_gids.clone()));
    }
    p.set_user(user);
    p.set_terminal(Some(o.terminal));
    if !o.caps.is_empty() {
        let extra = o
            .caps
            .iter()
            .map(|name| {
                serde_json::from_value::<oci_spec::runtime::Capability>(serde_json::json!(name))
                    .map_err(|_| Error::Unsupported(format!("--cap: unknown capability {name:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut caps = p.capabilities().clone().unwrap_or_else(|| {
            let mut c = LinuxCapabilities::default();
            c.set_bounding(None);
            c.set_effective(None);
            c.set_permitted(None);
            c.set_inheritable(None);
            c.set_ambient(None);
            c
        });
        let with_extra = |set: &Option<Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(extra.iter().copied());
            Some(s)
        };
        let (b, e, pe, a) = (
            with_extra(caps.bounding()),
            with_extra(caps.effective()),
            with_extra(caps.permitted()),
            with_extra(caps.ambient()),
        );
        caps.set_bounding(b);
        caps.set_effective(e);
        caps.set_permitted(pe);
        // Inheritable stays as the container has it: never granted by --cap
        // (CVE-2022-29162). Ambient needs inheritable, so an added ambient cap only
        // takes effect where the container already allows it.
        caps.set_ambient(a);
        p.set_capabilities(Some(caps));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(a) = &o.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &o.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    Ok(p)
}
