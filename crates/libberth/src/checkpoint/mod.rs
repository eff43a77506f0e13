//! `checkpoint` and `restore` with CRIU, driven through the `criu` command line.
//!
//! checkpoint: takes the container's lock, checks that it is running (or paused), runs
//! `criu dump -t <init pid>` with the container's external mounts, masked files, devices,
//! joined namespaces and cgroup freezer, and on success writes `descriptors.json` (the init's
//! stdio, runc's format) and `berth-config.json` (the config the container ran with) into
//! the image directory. Unless `--leave-running` (or `--pre-dump`) the container is then
//! stopped: CRIU killed its processes, and anything left in its cgroup is killed.
//!
//! restore: makes the state directory and the cgroup, binds the bundle's rootfs at
//! `<state>/criu-root` in a private mount namespace of `berth` (nothing reaches the host's
//! mount table), creates the spec's mount points in the rootfs as `create` would, then runs
//! `criu restore --restore-detached --restore-sibling` with the new cgroup as the cgroup root
//! and the host side of every external mount. The restored init's pid and start time go to
//! state.json, so `state`, `kill` and `delete` work as for any container. Any failure undoes
//! all of it.
//!
//! Why the command line and not `criu swrk` (RPC): the RPC needs protobuf code for CRIU's
//! messages and a notification loop; every option berth maps exists on the command line,
//! errors land in the `-o` log either way, and the flags criu is run with can be read in a
//! process listing. What RPC alone offers (handing back an orphaned pty master for
//! `--console-socket`, running hooks at `setup-namespaces`) is refused by name.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::container::{
    cgroup_resources, derive_status, kill_cgroup, owner_name, wait_gone, Runtime,
};
use crate::error::{Context, Error};
use crate::hooks;
use crate::namespace::Namespaces;
use crate::rootfs::{options, resolve};
use crate::spec;
use crate::state::{self, Saved, StateDir, Status};

/// runc's name for the init's stdio, one entry per fd 0, 1 and 2 (readlink of /proc/pid/fd/N).
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
/// The config the checkpointed container ran with.
pub const CONFIG_FILE: &str = "berth-config.json";
/// criu's log names, in the work path (the image path unless `--work-path`).
pub const DUMP_LOG: &str = "dump.log";
pub const RESTORE_LOG: &str = "restore.log";
/// Where the rootfs is bound for criu inside the state directory.
const CRIU_ROOT: &str = "criu-root";
const CRIU_PIDFILE: &str = "criu-restore.pid";
const CRIU_STDERR: &str = "criu-restore.stderr";
/// The key criu knows a joined net or pid namespace by, on dump and restore (runc's names).
const EXT_NET_KEY: &str = "extRootNetNS";
const EXT_PID_KEY: &str = "extRootPidNS";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Runtime(#[from] Error),

    #[error("container cannot be checkpointed in {0} state")]
    NotCheckpointable(Status),

    /// A flag whose value is wrong.
    #[error("{flag} {value:?}: {reason}")]
    BadFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },

    /// A flag berth cannot honour; refused rather than ignored.
    #[error("{flag} is not supported: {reason}")]
    UnsupportedFlag {
        flag: &'static str,
        reason: &'static str,
    },

    /// Something in the bundle's config.json that restore cannot honour.
    #[error("{file}: {field}: {reason}")]
    Config {
        file: PathBuf,
        field: String,
        reason: String,
    },

    #[error("criu is not on PATH (install the criu package, or pass --criu PATH)")]
    CriuNotFound,

    #[error("cannot run {path}")]
    CriuSpawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// criu ran and failed; `error` is the last error line of its log.
    #[error("criu {action} failed ({status}), log {log}: {error}")]
    CriuFailed {
        action: &'static str,
        status: String,
        log: PathBuf,
        error: String,
    },

    #[error("image path {path}")]
    ImagePath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("image path {path} holds no checkpoint ({DESCRIPTORS_FILE} is missing)")]
    NotAnImage { path: PathBuf },

    #[error("{path}: {reason}")]
    BadDescriptors { path: PathBuf, reason: String },

    #[error("criu restore succeeded but left no usable pid in {path}: {reason}")]
    NoRestoredPid { path: PathBuf, reason: String },

    /// A failure whose cleanup failed too: both are kept.
    #[error("{error} (cleanup also failed: {cleanup})")]
    Cleanup { error: String, cleanup: String },
}

impl CheckpointError {
    /// The full chain, "outer: inner: cause", for one-line reports.
    pub fn chain(&self) -> String {
        crate::error::chain_of(self)
    }
}

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// `--manage-cgroups-mode`: how criu treats the container's cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupsMode {
    /// criu's own default (soft).
    #[default]
    Default,
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    /// runc's values: "" (criu's default), soft, full, strict, ignore.
    pub fn parse(value: &str) -> Result<CgroupsMode> {
        match value {
            "" => Ok(CgroupsMode::Default),
            "soft" => Ok(CgroupsMode::Soft),
            "full" => Ok(CgroupsMode::Full),
            "strict" => Ok(CgroupsMode::Strict),
            "ignore" => Ok(CgroupsMode::Ignore),
            _ => Err(CheckpointError::BadFlag {
                flag: "--manage-cgroups-mode",
                value: value.to_string(),
                reason: "expected soft, full, strict or ignore".into(),
            }),
        }
    }

    fn criu_arg(self) -> &'static str {
        match self {
            CgroupsMode::Default => "--manage-cgroups",
            CgroupsMode::Soft => "--manage-cgroups=soft",
            CgroupsMode::Full => "--manage-cgroups=full",
            CgroupsMode::Strict => "--manage-cgroups=strict",
            CgroupsMode::Ignore => "--manage-cgroups=ignore",
        }
    }
}

/// Checks `--empty-ns` values. Like runc, berth does not manage network devices, so the
/// network namespace is always created empty (`criu --empty-ns net`); "network" is the only
/// value there is, any other is refused.
pub fn check_empty_ns(values: &[String]) -> Result<()> {
    match values.iter().find(|v| v.as_str() != "network") {
        None => Ok(()),
        Some(v) => Err(CheckpointError::BadFlag {
            flag: "--empty-ns",
            value: v.clone(),
            reason: "only \"network\" is supported".into(),
        }),
    }
}

/// `--page-server ADDRESS:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageServer {
    pub address: String,
    pub port: u16,
}

impl PageServer {
    /// `host:port` or `[v6]:port`.
    pub fn parse(value: &str) -> Result<PageServer> {
        let bad = |reason: &str| CheckpointError::BadFlag {
            flag: "--page-server",
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| bad("expected ADDRESS:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || port.is_empty() {
            return Err(bad("expected ADDRESS:PORT"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(PageServer {
            address: host.to_string(),
            port,
        })
    }
}

/// Options criu takes on both dump and restore.
#[derive(Debug, Clone, Default)]
pub struct CriuCommon {
    /// The criu binary (`--criu`); looked up on PATH when absent.
    pub criu: Option<PathBuf>,
    /// Where the images are (absolute).
    pub image_path: PathBuf,
    /// Where criu works and logs (absolute); the image path when absent.
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub cgroups_mode: CgroupsMode,
    pub auto_dedup: bool,
    pub lazy_pages: bool,
}

impl CriuCommon {
    fn log_path(&self, name: &str) -> PathBuf {
        self.work_path
            .as_deref()
            .unwrap_or(&self.image_path)
            .join(name)
    }
}

/// What `berth checkpoint` asks for.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    pub id: String,
    pub common: CriuCommon,
    /// Previous images, relative to the image path (`--parent-path`).
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    pub pre_dump: bool,
    pub tcp_skip_in_flight: bool,
    pub link_remap: bool,
    pub page_server: Option<PageServer>,
    /// Where criu writes `\0` once the lazy-pages server is ready (with `lazy_pages`).
    pub status_fd: Option<RawFd>,
}

/// What `berth restore` asks for.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub common: CriuCommon,
    pub pid_file: Option<PathBuf>,
    /// `TYPE:NAME`, criu's `--lsm-profile`.
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
}

/// A restored container.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    /// Host pid of the restored init; a child of the caller (criu's `--restore-sibling`).
    pub pid: i32,
}

/// The one place that says which status can be checkpointed (runc: not created, not stopped).
pub fn checkpointable(status: Status) -> Result<()> {
    match status {
        Status::Running | Status::Paused => Ok(()),
        Status::Creating | Status::Created | Status::Stopped => {
            Err(CheckpointError::NotCheckpointable(status))
        }
    }
}

impl CheckpointOptions {
    /// Flag checks that need no container.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.parent_path {
            if p.is_absolute() {
                return Err(CheckpointError::BadFlag {
                    flag: "--parent-path",
                    value: p.display().to_string(),
                    reason: "must be relative to the image path".into(),
                });
            }
        }
        if let Some(fd) = self.status_fd {
            if !self.common.lazy_pages {
                return Err(CheckpointError::BadFlag {
                    flag: "--status-fd",
                    value: fd.to_string(),
                    reason: "only criu's lazy-pages server reports readiness; add --lazy-pages"
                        .into(),
                });
            }
            check_writable_fd(fd)?;
        }
        Ok(())
    }
}

fn check_writable_fd(fd: RawFd) -> Result<()> {
    let bad = |reason: String| CheckpointError::BadFlag {
        flag: "--status-fd",
        value: fd.to_string(),
        reason,
    };
    // SAFETY: F_GETFL on an integer fd only reads the flags of whatever the fd refers to;
    // an fd that is not open yields EBADF. No memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(bad(io::Error::last_os_error().to_string()));
    }
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY | libc::O_RDWR => Ok(()),
        _ => Err(bad("not open for writing".into())),
    }
}

impl Runtime {
    /// Checkpoints a running (or paused) container with `criu dump`; see the module docs.
    /// A failed dump leaves the container as it was.
    pub fn checkpoint(&self, o: &CheckpointOptions) -> Result<()> {
        o.validate()?;
        let dir = StateDir::open(&self.root, &o.id)?;
        let mut saved = dir.load()?;
        checkpointable(derive_status(&dir.fifo(), &saved))?;
        let criu = find_criu(o.common.criu.as_deref())?;
        let mut bundle = spec::load_bundle(&saved.bundle)?;
        // What the container runs with, not a config.json edited since create.
        bundle.spec = dir.config(&saved)?;
        let ns = namespaces(&bundle.spec, &bundle.config_path)?;

        make_dir(&o.common.image_path)?;
        if let Some(w) = &o.common.work_path {
            make_dir(w)?;
        }
        if let Some(parent) = &o.parent_path {
            let real = o.common.image_path.join(parent);
            match fs::metadata(&real) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(CheckpointError::BadFlag {
                        flag: "--parent-path",
                        value: parent.display().to_string(),
                        reason: format!("{} is not a directory", real.display()),
                    })
                }
                Err(e) => {
                    return Err(CheckpointError::BadFlag {
                        flag: "--parent-path",
                        value: parent.display().to_string(),
                        reason: format!("{}: {e}", real.display()),
                    })
                }
            }
        }

        let external_ns = dump_external_namespaces(&ns)?;
        let mounts = if o.pre_dump {
            Vec::new()
        } else {
            dump_mounts(&bundle.spec, saved.pid, &ns, saved.cgroup.as_ref())?
        };
        let stdio = stdio_of(saved.pid);
        if !o.pre_dump {
            // An earlier checkpoint's descriptors would make a half-written image look
            // restorable should this dump fail.
            let old = o.common.image_path.join(DESCRIPTORS_FILE);
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", old.display()), e).into()),
            }
        }
        let plan = DumpPlan {
            o,
            pid: saved.pid,
            root: &saved.rootfs,
            mounts,
            external_ns,
            freeze_cgroup: saved.cgroup.as_ref().and_then(freezer_dir),
        };
        let output = Command::new(&criu)
            .args(dump_args(&plan))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| CheckpointError::CriuSpawn {
                path: criu.clone(),
                source,
            })?;
        let action = if o.pre_dump { "pre-dump" } else { "dump" };
        if !output.status.success() {
            return Err(criu_failed(
                action,
                output.status,
                o.common.log_path(DUMP_LOG),
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        if o.pre_dump {
            return Ok(());
        }
        let descriptors = serde_json::to_vec(&stdio).expect("strings serialize");
        state::write_atomic(
            &o.common.image_path.join(DESCRIPTORS_FILE),
            &descriptors,
            0o600,
        )?;
        let config = serde_json::to_vec_pretty(&bundle.spec).expect("spec serializes");
        state::write_atomic(&o.common.image_path.join(CONFIG_FILE), &config, 0o600)?;
        if o.leave_running {
            return Ok(());
        }
        // CRIU killed the tree; make sure of it, as runc's destroy does.
        if !wait_gone(saved.pid, saved.pid_start, Duration::from_secs(5)) {
            if let Some(cg) = &saved.cgroup {
                kill_cgroup(cg);
            }
            let _ = kill(Pid::from_raw(saved.pid), Signal::SIGKILL);
            wait_gone(saved.pid, saved.pid_start, Duration::from_secs(5));
        }
        saved.status = Status::Stopped;
        dir.save(&saved)?;
        Ok(())
    }

    /// Restores a checkpoint as container `o.id` from bundle `o.bundle`; see the module
    /// docs. On any error nothing is left: no state directory, cgroup, mount or process.
    pub fn restore(&self, o: &RestoreOptions) -> Result<Restored> {
        state::validate_id(&o.id)?;
        if self.root.join(&o.id).exists() {
            return Err(Error::Exists(o.id.clone()).into());
        }
        let criu = find_criu(o.common.criu.as_deref())?;
        let stdio = read_descriptors(&o.common.image_path)?;
        let bundle = spec::load_bundle(&o.bundle)?;
        restorable(&bundle.spec, &bundle.config_path)?;
        let ns = namespaces(&bundle.spec, &bundle.config_path)?;
        let linux = bundle.spec.linux().as_ref().expect("validated");
        let cgroup = berth_cgroups::Manager::new(&berth_cgroups::CgroupSetup {
            cgroups_path: linux.cgroups_path().as_deref(),
            container_id: &o.id,
            systemd: self.systemd_cgroup,
        })
        .map_err(Error::from)?;
        let resources = cgroup_resources(linux);
        cgroup.validate(&resources).map_err(Error::from)?;
        if let Some(w) = &o.common.work_path {
            make_dir(w)?;
        }

        let dir = StateDir::create(&self.root, &o.id)?;
        let mut undo = Undo {
            dir: Some(dir),
            cgroup: None,
            mount: None,
        };
        let inputs = RestoreInputs {
            criu,
            stdio,
            bundle,
            ns,
            cgroup,
        };
        match restore_in(o, &inputs, &mut undo) {
            Ok(r) => {
                undo.disarm();
                Ok(r)
            }
            Err(e) => match undo.run() {
                Ok(()) => Err(e),
                Err(cleanup) => Err(CheckpointError::Cleanup {
                    error: e.chain(),
                    cleanup,
                }),
            },
        }
    }
}

/// What restore checked and built before it made anything.
struct RestoreInputs {
    criu: PathBuf,
    /// The checkpointed init's fds 0-2 (descriptors.json).
    stdio: Vec<String>,
    bundle: spec::Bundle,
    ns: Namespaces,
    cgroup: berth_cgroups::Manager,
}

/// The part of restore that leaves things to undo; `undo` learns of each as it is made.
fn restore_in(o: &RestoreOptions, inputs: &RestoreInputs, undo: &mut Undo) -> Result<Restored> {
    let RestoreInputs {
        criu,
        stdio,
        bundle,
        ns,
        cgroup,
    } = inputs;
    let sp = &bundle.spec;
    let linux = sp.linux().as_ref().expect("validated");
    let state_dir = undo.dir.as_ref().expect("set by restore").dir.clone();
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
        cgroup: Some(cgroup.clone()),
        own_pid_ns: ns.creates(LinuxNamespaceType::Pid),
        hooks: sp.hooks().clone(),
        host_mounts: None,
        status: Status::Creating,
    };
    undo.dir.as_ref().expect("set").save(&saved)?;
    undo.dir.as_ref().expect("set").save_config(sp)?;
    cgroup.create().map_err(Error::from)?;
    undo.cgroup = Some(cgroup.clone());
    cgroup
        .apply_resources(&cgroup_resources(linux))
        .map_err(Error::from)?;

    // criu wants its root to be a mount point whose parent is not overmounted: bind
    // the rootfs in a mount namespace of our own, so the host never sees it.
    private_mount_namespace()?;
    let criu_root = state_dir.join(CRIU_ROOT);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&criu_root)
        .ctx(|| format!("create {}", criu_root.display()))?;
    mount(
        Some(&bundle.rootfs),
        &criu_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| {
        format!(
            "bind rootfs {} on {}",
            bundle.rootfs.display(),
            criu_root.display()
        )
    })?;
    undo.mount = Some(criu_root.clone());
    prepare_mount_points(&criu_root, sp)?;

    let ns_files = restore_namespace_files(ns)?;
    let first_free = ns_files
        .iter()
        .map(|(_, _, f)| f.as_raw_fd() + 1)
        .max()
        .unwrap_or(3)
        .max(3);
    let inherit_ns: Vec<(RawFd, &str)> = ns_files
        .iter()
        .enumerate()
        .map(|(i, (_, key, _))| (first_free + i as RawFd, *key))
        .collect();
    let pidfile = state_dir.join(CRIU_PIDFILE);
    let plan = RestorePlan {
        o,
        root: &criu_root,
        pidfile: &pidfile,
        mounts: restore_mounts(sp, ns, cgroup),
        stdio: stdio.iter().map(String::as_str).collect(),
        inherit_ns,
        join_ns: restore_join_ns(ns),
        cgroup_roots: cgroup_roots(cgroup),
    };
    let args = restore_args(&plan);
    let stderr_path = state_dir.join(CRIU_STDERR);
    let stderr_file = fs::File::create(&stderr_path)
        .map_err(|e| Error::io(format!("create {}", stderr_path.display()), e))?;
    let mut cmd = Command::new(criu);
    cmd.args(&args);
    // The restored init gets our stdio where it had a pipe (criu --inherit-fd).
    let pipe = |i: usize| stdio.get(i).is_some_and(|s| s.starts_with("pipe:"));
    cmd.stdin(if pipe(0) {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    cmd.stdout(if pipe(1) {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    if pipe(2) {
        cmd.stderr(Stdio::inherit());
    } else {
        cmd.stderr(stderr_file);
    }
    let dups: Vec<(RawFd, RawFd)> = ns_files
        .iter()
        .enumerate()
        .map(|(i, (_, _, f))| (f.as_raw_fd(), first_free + i as RawFd))
        .collect();
    let entry = cgroup.clone();
    // berth is single-threaded, so the forked child may allocate (the cgroup writes do)
    // before exec. SAFETY: dup2 only targets fds above every source fd, so no source is
    // closed before it is copied; the sources stay open in the parent (`ns_files`) until
    // criu has exited.
    unsafe {
        cmd.pre_exec(move || {
            for (src, dst) in &dups {
                if libc::dup2(*src, *dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Like runc, criu itself runs in the container's cgroup, so restored tasks
            // land there whatever --manage-cgroups-mode says.
            entry
                .enter_self(false)
                .map_err(|e| io::Error::other(e.to_string()))
        })
    };
    let status = cmd.status().map_err(|source| CheckpointError::CriuSpawn {
        path: criu.clone(),
        source,
    })?;
    drop(ns_files);
    undo.unmount()?;
    if !status.success() {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        return Err(criu_failed(
            "restore",
            status,
            o.common.log_path(RESTORE_LOG),
            &stderr,
        ));
    }
    let _ = fs::remove_file(&stderr_path);
    let pid = read_pidfile(&pidfile)?;
    let _ = fs::remove_file(&pidfile);
    saved.pid = pid;
    saved.pid_start = state::proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
    if !state::pid_alive(saved.pid, saved.pid_start) {
        return Err(CheckpointError::NoRestoredPid {
            path: pidfile,
            reason: format!("process {pid} is not running"),
        });
    }
    saved.status = Status::Running;
    if let Some(pf) = &o.pid_file {
        let abs = if pf.is_absolute() {
            pf.clone()
        } else {
            std::env::current_dir().unwrap_or_default().join(pf)
        };
        state::write_atomic(&abs, pid.to_string().as_bytes(), 0o644)?;
    }
    undo.dir.as_ref().expect("set").save(&saved)?;
    undo.dir.as_ref().expect("set").save_config(sp)?;
    Ok(Restored { pid })
}

/// The criu binary: `--criu`, else `criu` on PATH.
fn find_criu(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("criu"))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or(CheckpointError::CriuNotFound)
}

/// Makes a directory (mode 0700) unless it exists, as runc does for image and work paths.
fn make_dir(p: &Path) -> Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(source) => Err(CheckpointError::ImagePath {
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn namespaces(sp: &Spec, config: &Path) -> Result<Namespaces> {
    let linux = sp.linux().as_ref().expect("validated");
    Namespaces::from_spec(linux.namespaces().as_deref().unwrap_or(&[])).map_err(|reason| {
        CheckpointError::Config {
            file: config.to_path_buf(),
            field: "linux.namespaces".into(),
            reason,
        }
    })
}

/// What restore refuses in a config: a terminal (its pty master can only come back through
/// criu's RPC), hooks that must run while criu sets up namespaces (RPC notifications), and
/// a joined cgroup namespace (criu cannot join one).
fn restorable(sp: &Spec, config: &Path) -> Result<()> {
    let refuse = |field: &str, reason: &str| {
        Err(CheckpointError::Config {
            file: config.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        })
    };
    if sp
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
    {
        return refuse(
            "process.terminal",
            "berth cannot restore a terminal container (criu hands the pty back only over RPC)",
        );
    }
    if let Some(h) = sp.hooks() {
        for kind in [hooks::Kind::Prestart, hooks::Kind::CreateRuntime] {
            if !kind.select(h).is_empty() {
                return refuse(
                    &format!("hooks.{}", kind.name()),
                    "berth cannot run these hooks during a criu restore (criu notifies them \
                     only over RPC)",
                );
            }
        }
    }
    let linux = sp.linux().as_ref().expect("validated");
    if linux
        .namespaces()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|n| {
            n.typ() == LinuxNamespaceType::Cgroup
                && n.path().as_ref().is_some_and(|p| !p.as_os_str().is_empty())
        })
    {
        return refuse(
            "linux.namespaces",
            "criu cannot restore into a joined cgroup namespace",
        );
    }
    Ok(())
}

/// `/proc/<pid>/fd/{0,1,2}` as readlink shows them ("pipe:[123]", "/dev/null").
fn stdio_of(pid: i32) -> Vec<String> {
    (0..3)
        .map(|fd| {
            fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn read_descriptors(image: &Path) -> Result<Vec<String>> {
    let meta = fs::metadata(image).map_err(|source| CheckpointError::ImagePath {
        path: image.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CheckpointError::ImagePath {
            path: image.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let path = image.join(DESCRIPTORS_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CheckpointError::NotAnImage {
                path: image.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e).into()),
    };
    serde_json::from_slice(&data).map_err(|e| CheckpointError::BadDescriptors {
        path,
        reason: e.to_string(),
    })
}

/// A mount criu must treat as external: `--external mnt[key]:value`. On dump the value is a
/// cookie naming it in the image; on restore the cookie is the key and the value the host
/// path to bind there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExtMount {
    key: PathBuf,
    value: PathBuf,
}

fn push_ext(list: &mut Vec<ExtMount>, key: PathBuf, value: PathBuf) {
    if !list.iter().any(|m| m.key == key) {
        list.push(ExtMount { key, value });
    }
}

/// A destination as a clean absolute path inside the container: `.` and empty components
/// dropped, `..` never above `/`.
fn container_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || options::parse(m.options().as_deref().unwrap_or(&[])).is_bind()
}

fn is_cgroup(m: &Mount) -> bool {
    matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2"))
}

/// The container's cgroup hierarchies that `create` bound from the host when the container
/// has no cgroup namespace: (name under the cgroup mount, host directory). The name is empty
/// on a cgroup2-only host, where the container's directory is bound at the mount itself.
fn cgroup_binds(cg: &berth_cgroups::Manager) -> Vec<(String, PathBuf)> {
    crate::container::cgroup_view(cg)
        .into_iter()
        .map(|h| (h.name, h.host_path))
        .collect()
}

fn host_cgroup_mounts() -> berth_cgroups::mountinfo::CgroupMounts {
    fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| berth_cgroups::mountinfo::parse_mountinfo(&t).ok())
        .map(|e| berth_cgroups::mountinfo::find_cgroup_mounts(&e))
        .unwrap_or_default()
}

/// Devices a user-namespaced container gets as binds of the host's nodes: the defaults and
/// linux.devices. Like runc, they are listed whether or not this container bound them
/// (criu ignores keys that name no mount).
fn device_paths(sp: &Spec) -> Vec<PathBuf> {
    let linux = sp.linux().as_ref().expect("validated");
    let mut out: Vec<PathBuf> = crate::rootfs::devices::defaults()
        .into_iter()
        .map(|d| d.path)
        .collect();
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        out.push(d.path().clone());
    }
    out
}

/// External mounts on dump: binds, host cgroup binds, /dev/null over masked files, devices.
fn dump_mounts(
    sp: &Spec,
    pid: i32,
    ns: &Namespaces,
    cg: Option<&berth_cgroups::Manager>,
) -> Result<Vec<ExtMount>> {
    let mut out = Vec::new();
    for m in sp.mounts().as_deref().unwrap_or(&[]) {
        let dest = container_path(m.destination());
        if is_cgroup(m) {
            if ns.has(LinuxNamespaceType::Cgroup) {
                continue;
            }
            for (name, _) in cg.map(cgroup_binds).unwrap_or_default() {
                let key = if name.is_empty() {
                    dest.clone()
                } else {
                    dest.join(name)
                };
                push_ext(&mut out, key.clone(), key);
            }
        } else if is_bind(m) {
            push_ext(&mut out, dest.clone(), dest);
        }
    }
    let linux = sp.linux().as_ref().expect("validated");
    let masked = linux.masked_paths().as_deref().unwrap_or(&[]);
    if !masked.is_empty() {
        let root = open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open /proc/{pid}/root"))?;
        for p in masked {
            let Ok(fd) = resolve::open_in_root(root.as_fd(), Path::new(p), OFlag::O_PATH) else {
                continue;
            };
            let is_dir = nix::sys::stat::fstat(&fd)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(true);
            if !is_dir {
                push_ext(
                    &mut out,
                    container_path(Path::new(p)),
                    PathBuf::from("/dev/null"),
                );
            }
        }
    }
    for d in device_paths(sp) {
        let key = container_path(&d);
        push_ext(&mut out, key.clone(), key);
    }
    Ok(out)
}

/// External mounts on restore: each cookie of [`dump_mounts`] and the host path for it.
fn restore_mounts(sp: &Spec, ns: &Namespaces, cg: &berth_cgroups::Manager) -> Vec<ExtMount> {
    let mut out = Vec::new();
    for m in sp.mounts().as_deref().unwrap_or(&[]) {
        let dest = container_path(m.destination());
        if is_cgroup(m) {
            if ns.has(LinuxNamespaceType::Cgroup) {
                continue;
            }
            for (name, host) in cgroup_binds(cg) {
                let key = if name.is_empty() {
                    dest.clone()
                } else {
                    dest.join(name)
                };
                push_ext(&mut out, key, host);
            }
        } else if is_bind(m) {
            if let Some(src) = m.source() {
                push_ext(&mut out, dest, src.clone());
            }
        }
    }
    let linux = sp.linux().as_ref().expect("validated");
    if !linux.masked_paths().as_deref().unwrap_or(&[]).is_empty() {
        push_ext(
            &mut out,
            PathBuf::from("/dev/null"),
            PathBuf::from("/dev/null"),
        );
    }
    for d in device_paths(sp) {
        let key = container_path(&d);
        push_ext(&mut out, key, d);
    }
    out
}

/// `--external net[inode]:extRootNetNS` (and pid) for namespaces joined by path: criu
/// leaves them alone and expects them back on restore.
fn dump_external_namespaces(ns: &Namespaces) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for (t, name, key) in [
        (LinuxNamespaceType::Network, "net", EXT_NET_KEY),
        (LinuxNamespaceType::Pid, "pid", EXT_PID_KEY),
    ] {
        if let Some(p) = ns.path(t) {
            let st = fs::metadata(p).ctx(|| format!("stat namespace {}", p.display()))?;
            out.push(OsString::from(format!("{name}[{}]:{key}", st.ino())));
        }
    }
    Ok(out)
}

/// The joined net and pid namespaces, opened for criu's `--inherit-fd`: (type, key, file).
fn restore_namespace_files(
    ns: &Namespaces,
) -> Result<Vec<(LinuxNamespaceType, &'static str, OwnedFd)>> {
    let mut out = Vec::new();
    for (t, key) in [
        (LinuxNamespaceType::Network, EXT_NET_KEY),
        (LinuxNamespaceType::Pid, EXT_PID_KEY),
    ] {
        if let Some(p) = ns.path(t) {
            let fd = open(p, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .ctx(|| format!("open namespace {}", p.display()))?;
            out.push((t, key, fd));
        }
    }
    Ok(out)
}

/// `--join-ns` for the other namespaces joined by path (criu's names).
fn restore_join_ns(ns: &Namespaces) -> Vec<(&'static str, PathBuf)> {
    ns.joined()
        .filter_map(|(t, p)| {
            let name = match t {
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                LinuxNamespaceType::User => "user",
                LinuxNamespaceType::Time => "time",
                LinuxNamespaceType::Mount => "mnt",
                // net and pid go through --inherit-fd; a joined cgroup ns is refused.
                LinuxNamespaceType::Network
                | LinuxNamespaceType::Pid
                | LinuxNamespaceType::Cgroup => return None,
            };
            Some((name, p.to_path_buf()))
        })
        .collect()
}

/// criu's `--cgroup-root`: where each hierarchy's root goes, as a path inside the hierarchy
/// (what /proc/pid/cgroup shows). cgroup2 is the default for controllers not named.
fn cgroup_roots(cg: &berth_cgroups::Manager) -> Vec<(Option<String>, PathBuf)> {
    let mounts = host_cgroup_mounts();
    let mut out = Vec::new();
    for m in &mounts.v1 {
        let Some(host) = m.controllers.first().and_then(|c| cg.path_for(c)) else {
            continue;
        };
        let Ok(rel) = host.strip_prefix(&m.mount_point) else {
            continue;
        };
        for c in &m.controllers {
            out.push((Some(c.clone()), m.root.join(rel)));
        }
    }
    if let (Some(v2), Some(host)) = (&mounts.v2, cg.unified_path()) {
        if let Ok(rel) = host.strip_prefix(&v2.mount_point) {
            out.push((None, v2.root.join(rel)));
        }
    }
    out
}

/// The freezer criu uses to stop the tree (else it uses ptrace).
fn freezer_dir(cg: &berth_cgroups::Manager) -> Option<PathBuf> {
    match cg.mode() {
        berth_cgroups::CgroupMode::Unified => cg.unified_path(),
        berth_cgroups::CgroupMode::Legacy | berth_cgroups::CgroupMode::Hybrid => {
            cg.path_for("freezer")
        }
    }
}

#[derive(Debug)]
struct DumpPlan<'a> {
    o: &'a CheckpointOptions,
    pid: i32,
    root: &'a Path,
    mounts: Vec<ExtMount>,
    external_ns: Vec<OsString>,
    freeze_cgroup: Option<PathBuf>,
}

#[derive(Debug)]
struct RestorePlan<'a> {
    o: &'a RestoreOptions,
    root: &'a Path,
    pidfile: &'a Path,
    mounts: Vec<ExtMount>,
    /// The checkpointed init's fds 0-2, from descriptors.json.
    stdio: Vec<&'a str>,
    /// (fd criu gets, key) of joined net and pid namespaces.
    inherit_ns: Vec<(RawFd, &'a str)>,
    join_ns: Vec<(&'static str, PathBuf)>,
    cgroup_roots: Vec<(Option<String>, PathBuf)>,
}

fn arg(args: &mut Vec<OsString>, a: impl Into<OsString>) {
    args.push(a.into());
}

fn common_args(c: &CriuCommon, log: &str, args: &mut Vec<OsString>) {
    arg(args, "-D");
    arg(args, &c.image_path);
    if let Some(w) = &c.work_path {
        arg(args, "-W");
        arg(args, w);
    }
    arg(args, "-o");
    arg(args, log);
    arg(args, "-v4");
    arg(args, c.cgroups_mode.criu_arg());
    // runc's rule: berth does not manage network devices either.
    arg(args, "--empty-ns");
    arg(args, "net");
    for (on, flag) in [
        (c.tcp_established, "--tcp-established"),
        (c.ext_unix_sk, "--ext-unix-sk"),
        (c.shell_job, "--shell-job"),
        (c.file_locks, "--file-locks"),
        (c.auto_dedup, "--auto-dedup"),
        (c.lazy_pages, "--lazy-pages"),
    ] {
        if on {
            arg(args, flag);
        }
    }
}

fn ext_mount_args(mounts: &[ExtMount], args: &mut Vec<OsString>) {
    for m in mounts {
        let mut s = OsString::from("mnt[");
        s.push(m.key.as_os_str());
        s.push("]:");
        s.push(m.value.as_os_str());
        arg(args, "--external");
        args.push(s);
    }
}

fn dump_args(p: &DumpPlan<'_>) -> Vec<OsString> {
    let o = p.o;
    let mut args = Vec::new();
    arg(&mut args, if o.pre_dump { "pre-dump" } else { "dump" });
    arg(&mut args, "-t");
    arg(&mut args, p.pid.to_string());
    common_args(&o.common, DUMP_LOG, &mut args);
    arg(&mut args, "--root");
    arg(&mut args, p.root);
    for (on, flag) in [
        (o.leave_running && !o.pre_dump, "--leave-running"),
        (o.tcp_skip_in_flight, "--skip-in-flight"),
        (o.link_remap, "--link-remap"),
        (o.pre_dump || o.parent_path.is_some(), "--track-mem"),
    ] {
        if on {
            arg(&mut args, flag);
        }
    }
    if let Some(parent) = &o.parent_path {
        arg(&mut args, "--prev-images-dir");
        arg(&mut args, parent);
    }
    if let Some(ps) = &o.page_server {
        arg(&mut args, "--page-server");
        arg(&mut args, "--address");
        arg(&mut args, &ps.address);
        arg(&mut args, "--port");
        arg(&mut args, ps.port.to_string());
    }
    if let Some(fd) = o.status_fd {
        arg(&mut args, "--status-fd");
        arg(&mut args, fd.to_string());
    }
    if let Some(f) = &p.freeze_cgroup {
        arg(&mut args, "--freeze-cgroup");
        arg(&mut args, f);
    }
    for e in &p.external_ns {
        arg(&mut args, "--external");
        args.push(e.clone());
    }
    ext_mount_args(&p.mounts, &mut args);
    args
}

fn restore_args(p: &RestorePlan<'_>) -> Vec<OsString> {
    let o = p.o;
    let mut args = Vec::new();
    arg(&mut args, "restore");
    common_args(&o.common, RESTORE_LOG, &mut args);
    arg(&mut args, "--root");
    arg(&mut args, p.root);
    arg(&mut args, "--restore-detached");
    arg(&mut args, "--restore-sibling");
    arg(&mut args, "--pidfile");
    arg(&mut args, p.pidfile);
    arg(&mut args, "--evasive-devices");
    if let Some(l) = &o.lsm_profile {
        arg(&mut args, "--lsm-profile");
        arg(&mut args, l);
    }
    if let Some(l) = &o.lsm_mount_context {
        arg(&mut args, "--lsm-mount-context");
        arg(&mut args, l);
    }
    for (ctrl, path) in &p.cgroup_roots {
        let mut s = OsString::new();
        if let Some(c) = ctrl {
            s.push(c);
            s.push(":");
        }
        s.push(path.as_os_str());
        arg(&mut args, "--cgroup-root");
        args.push(s);
    }
    for (i, s) in p.stdio.iter().enumerate() {
        if s.starts_with("pipe:") {
            arg(&mut args, "--inherit-fd");
            arg(&mut args, format!("fd[{i}]:{s}"));
        }
    }
    for (fd, key) in &p.inherit_ns {
        arg(&mut args, "--inherit-fd");
        arg(&mut args, format!("fd[{fd}]:{key}"));
    }
    for (name, path) in &p.join_ns {
        let mut s = OsString::from(format!("{name}:"));
        s.push(path.as_os_str());
        arg(&mut args, "--join-ns");
        args.push(s);
    }
    ext_mount_args(&p.mounts, &mut args);
    args
}

/// criu's failure as one line: action, exit status, the log and its last error line (else
/// the last line criu wrote to stderr).
fn criu_failed(
    action: &'static str,
    status: ExitStatus,
    log: PathBuf,
    stderr: &str,
) -> CheckpointError {
    let error = fs::read_to_string(&log)
        .ok()
        .and_then(|t| last_error_line(&t))
        .or_else(|| last_error_line(stderr))
        .or_else(|| {
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "no error line in the log".to_string());
    CheckpointError::CriuFailed {
        action,
        status: status.to_string(),
        log,
        error,
    }
}

/// The last line holding "Error" in criu's log text, without its "(00.123456) " timestamp.
fn last_error_line(text: &str) -> Option<String> {
    let line = text.lines().rev().find(|l| l.contains("Error"))?.trim();
    let line = match line.strip_prefix('(') {
        Some(rest) => match rest.split_once(") ") {
            Some((ts, tail)) if ts.chars().all(|c| c.is_ascii_digit() || c == '.') => tail,
            _ => line,
        },
        None => line,
    };
    Some(line.to_string())
}

fn read_pidfile(path: &Path) -> Result<i32> {
    let text = fs::read_to_string(path).map_err(|e| CheckpointError::NoRestoredPid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(CheckpointError::NoRestoredPid {
            path: path.to_path_buf(),
            reason: format!("{:?} is not a pid", text.trim()),
        }),
    }
}

/// Gives berth its own mount namespace, a slave of the host's, so the rootfs bind made for
/// criu (and anything criu mounts outside the container) never reaches the host and is
/// gone when berth and criu exit.
fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .ctx(|| "unshare the mount namespace for criu".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make / a slave mount in berth's mount namespace".into())?;
    Ok(())
}

fn unmount_root(p: &Path) -> Result<()> {
    match umount2(p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys(format!("unmount {}", p.display()), e).into()),
    }
    match fs::remove_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", p.display()), e).into()),
    }
}

/// runc's preparation of the rootfs for criu: every mount point the spec needs is made as
/// `create` would make it, except cgroup mounts and mount points on a tmpfs (criu restores
/// tmpfs contents). Bind sources are bound meanwhile, so that mount points inside them can
/// be made, and unbound at the end: criu mounts everything itself. Paths are resolved
/// inside the rootfs (RESOLVE_IN_ROOT).
fn prepare_mount_points(root: &Path, sp: &Spec) -> Result<()> {
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", root.display()))?;
    let mounts = sp.mounts().as_deref().unwrap_or(&[]);
    let mut bound: Vec<PathBuf> = Vec::new();
    let res = (|| -> Result<()> {
        for m in mounts {
            let dest = container_path(m.destination());
            if is_cgroup(m) || on_tmpfs(&dest, mounts) {
                continue;
            }
            let dir_mode = Mode::from_bits_truncate(0o755);
            if !is_bind(m) {
                resolve::mkdir_all(root_fd.as_fd(), &dest, dir_mode)?;
                continue;
            }
            let Some(src) = m.source() else {
                continue;
            };
            let meta = fs::metadata(src).ctx(|| format!("bind source {}", src.display()))?;
            let target = if meta.is_dir() {
                resolve::mkdir_all(root_fd.as_fd(), &dest, dir_mode)?
            } else {
                resolve::ensure_file(root_fd.as_fd(), &dest)?
            };
            mount(
                Some(src),
                &resolve::fd_path(target.as_fd()),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx(|| format!("bind {} on {} for criu", src.display(), dest.display()))?;
            bound.push(dest);
        }
        Ok(())
    })();
    for dest in bound.iter().rev() {
        if let Ok(fd) = resolve::open_in_root(root_fd.as_fd(), dest, OFlag::O_PATH) {
            let _ = umount2(&resolve::fd_path(fd.as_fd()), MntFlags::MNT_DETACH);
        }
    }
    res
}

/// runc's test: the destination lies below a tmpfs mount of the spec.
fn on_tmpfs(dest: &Path, mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        m.typ().as_deref() == Some("tmpfs") && {
            let d = container_path(m.destination());
            dest != d && dest.starts_with(&d)
        }
    })
}

/// What a failed restore must take down, in reverse order of making.
struct Undo {
    dir: Option<StateDir>,
    cgroup: Option<berth_cgroups::Manager>,
    mount: Option<PathBuf>,
}

impl Undo {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.mount = None;
    }

    /// Unmounts criu's root and forgets it, or keeps it to undo when that fails.
    fn unmount(&mut self) -> Result<()> {
        if let Some(m) = &self.mount {
            unmount_root(m)?;
        }
        self.mount = None;
        Ok(())
    }

    /// Undoes everything; every step is tried, and the failures are reported together.
    /// The state directory is kept if criu's root could not be unmounted from it: removing
    /// it recursively would walk into the bundle's rootfs.
    fn run(mut self) -> std::result::Result<(), String> {
        let mut errors = Vec::new();
        let mut keep_dir = false;
        if let Err(e) = self.unmount() {
            errors.push(e.chain());
            keep_dir = true;
        }
        if let Some(cg) = self.cgroup.take() {
            kill_cgroup(&cg);
            if let Err(e) = cg.remove() {
                errors.push(Error::from(e).chain());
            }
        }
        if let Some(d) = self.dir.take() {
            if keep_dir {
                errors.push(format!(
                    "kept {} (criu's root is still mounted)",
                    d.dir.display()
                ));
            } else if let Err(e) = d.remove() {
                errors.push(e.chain());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests;
