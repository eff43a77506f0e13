//! From an image config and the user's options to an OCI runtime config, with the defaults
//! podman applies: its capability set, masked and read-only paths, namespaces, a default
//! seccomp profile (an allow list), and the image's Entrypoint, Cmd, Env, User, WorkingDir
//! and Volumes.

use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

use crate::passwd::ResolvedUser;

mod seccomp;
pub use seccomp::{
    default_seccomp, default_seccomp_for, retain_known_syscalls, SECCOMP_ALLOW, SECCOMP_DENY,
};

/// The capabilities a container gets by default (podman's set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The most processes a container may have unless told otherwise (podman's default).
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// Paths hidden from the container (podman's and docker's list). `/sys/devices/virtual/powercap`
/// holds energy counters that leak what other workloads compute (PLATYPUS, CVE-2020-8694).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
];

/// How the container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// What the user asked for beyond the image.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint; `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`, applied over the image's Env.
    pub env: Vec<String>,
    /// Replaces the image's WorkingDir.
    pub workdir: Option<String>,
    pub tty: bool,
    pub hostname: String,
    pub binds: Vec<Bind>,
    pub network: Network,
    /// Bytes.
    pub memory: Option<i64>,
    /// CPUs, as a fraction (1.5 = one and a half).
    pub cpus: Option<f64>,
    /// The most processes; `None` for no limit.
    pub pids_limit: Option<i64>,
    /// RLIMIT_NOFILE for the process (soft = hard).
    pub nofile: u64,
    /// Apply the default seccomp profile.
    pub seccomp: bool,
    /// Cgroup path for the container (runtime's `linux.cgroupsPath`).
    pub cgroups_path: Option<String>,
}

/// Why no runtime config could be made.
#[derive(Debug, thiserror::Error)]
pub enum RunConfigError {
    #[error("the image has neither an entrypoint nor a command, and none was given")]
    NoCommand,
    #[error("--cpus {0}: must be above 0")]
    BadCpus(f64),
    #[error("--memory {0}: must be at least 6 MiB")]
    BadMemory(i64),
    #[error("-v {0}: the container path must be absolute")]
    BadBind(String),
    #[error("runtime config: {0}")]
    Spec(String),
}

/// The mounts every container gets: /proc, /dev (a tmpfs), /dev/pts, `shm` at /dev/shm,
/// /dev/mqueue, /sys (read-only unless `sys_readonly` is false: privileged containers) and
/// its cgroup tree, read-only.
pub fn default_mounts(shm: Value, sys_readonly: bool) -> Vec<Value> {
    let mut sys = vec!["nosuid", "noexec", "nodev"];
    if sys_readonly {
        sys.push("ro");
    }
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        shm,
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// The process arguments: Entrypoint + Cmd, with the user's overrides (docker's rule: a new
/// entrypoint drops the image's Cmd).
pub fn process_args(
    image: &ImageConfiguration,
    opts: &RunOptions,
) -> Result<Vec<String>, RunConfigError> {
    let cfg = image.config().as_ref();
    let image_entry = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = cfg.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let (entry, cmd) = match &opts.entrypoint {
        Some(e) => (e.clone(), opts.command.clone()),
        None if !opts.command.is_empty() => (image_entry, opts.command.clone()),
        None => (image_entry, image_cmd),
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RunConfigError::NoCommand);
    }
    Ok(args)
}

/// The environment: the image's, then the user's (a later `KEY=` replaces an earlier one),
/// plus PATH, HOSTNAME, HOME and TERM where missing.
pub fn process_env(
    image: &ImageConfiguration,
    opts: &RunOptions,
    user: &ResolvedUser,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.to_string());
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    if opts.tty {
        set("TERM=xterm");
    }
    set(&format!("HOSTNAME={}", opts.hostname));
    set(&format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    for kv in image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
    {
        set(&kv);
    }
    for kv in &opts.env {
        set(kv);
    }
    env
}

/// The runtime config for a container of `image` whose rootfs is at `rootfs` and whose
/// process runs as `user`. `volumes` are (destination, host dir) pairs for the image's
/// Volumes, made by the caller.
pub fn runtime_config(
    image: &ImageConfiguration,
    opts: &RunOptions,
    user: &ResolvedUser,
    rootfs: &std::path::Path,
    extra_binds: &[Bind],
) -> Result<Value, RunConfigError> {
    let args = process_args(image, opts)?;
    let env = process_env(image, opts, user);
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| {
            image
                .config()
                .as_ref()
                .and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".to_string());
    let caps = json!(DEFAULT_CAPS);
    let shm = json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]});
    let mut mounts = default_mounts(shm, true);
    for b in extra_binds.iter().chain(&opts.binds) {
        if !b.destination.starts_with('/') {
            return Err(RunConfigError::BadBind(b.destination.clone()));
        }
        let mut o = vec!["rbind", "nosuid", "nodev"];
        if b.readonly {
            o.push("ro");
        }
        mounts.push(json!({"destination": b.destination, "type": "bind",
                           "source": b.source, "options": o}));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if opts.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = opts.memory {
        if m < 6 << 20 {
            return Err(RunConfigError::BadMemory(m));
        }
        resources["memory"] = json!({"limit": m});
    }
    if let Some(c) = opts.cpus {
        if c.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(RunConfigError::BadCpus(c));
        }
        let period = 100_000u64;
        resources["cpu"] = json!({"quota": (c * period as f64).round() as i64, "period": period});
    }
    if let Some(p) = opts.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let mut linux = json!({
        "resources": resources,
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": [
            "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    });
    if opts.seccomp {
        linux["seccomp"] = default_seccomp();
    }
    if let Some(p) = &opts.cgroups_path {
        linux["cgroupsPath"] = json!(p);
    }
    let mut process = json!({
        "terminal": opts.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": opts.nofile, "soft": opts.nofile}],
        "oomScoreAdj": 0
    });
    if !user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(user.additional_gids);
    }
    let spec = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": rootfs, "readonly": false},
        "hostname": opts.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    // Checked against the spec's types before any runtime sees it.
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
        .map_err(|e| RunConfigError::Spec(e.to_string()))?;
    Ok(spec)
}

/// The image's StopSignal, if it names one.
pub fn stop_signal(image: &ImageConfiguration) -> Option<String> {
    image
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone())
        .filter(|s| !s.is_empty())
}

/// The image's Volumes (container paths), sorted.
pub fn volumes(image: &ImageConfiguration) -> Vec<String> {
    let mut v: Vec<String> = image
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests;
