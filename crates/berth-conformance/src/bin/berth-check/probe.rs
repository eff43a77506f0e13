//! Observing each [`Probe`] from inside the container.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_conformance::{caps, Observed, Probe};

use crate::cgroup;
use crate::sys;
use berth_conformance::mountinfo::{self, MountEntry};

/// Files read once and shared by every probe.
#[derive(Default)]
pub struct Context {
    mounts: Option<Result<Vec<MountEntry>, String>>,
}

impl Context {
    fn mounts(&mut self) -> Result<&[MountEntry], String> {
        let parsed = self.mounts.get_or_insert_with(|| {
            fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))
                .and_then(|t| mountinfo::parse(&t))
        });
        parsed.as_deref().map_err(Clone::clone)
    }

    pub fn observe(&mut self, probe: &Probe) -> Observed {
        match probe {
            Probe::Namespace { ns, host_inode } => namespace(ns, *host_inode),
            Probe::Hostname => uts(false),
            Probe::Domainname => uts(true),
            Probe::MountType { destination } => match self.mounts() {
                Ok(m) => match mountinfo::topmost(m, destination) {
                    Some(e) => Observed::value(&e.fstype, format!("mount {}", e.id)),
                    None => Observed::value("absent", "/proc/self/mountinfo"),
                },
                Err(e) => Observed::Error(e),
            },
            Probe::MountOption {
                destination,
                option,
            } => match self.mounts() {
                Ok(m) => match mountinfo::topmost(m, destination) {
                    Some(e) => {
                        let set = e.options.iter().any(|o| o == option);
                        Observed::value(
                            if set { "set" } else { "unset" },
                            format!("{} {}", e.fstype, e.options.join(",")),
                        )
                    }
                    None => Observed::Error(format!("nothing is mounted on {destination}")),
                },
                Err(e) => Observed::Error(e),
            },
            Probe::Device { path } => device(path),
            Probe::FileMode { path } => match fs::symlink_metadata(path) {
                Ok(m) => Observed::value(format!("{:04o}", m.mode() & 0o7777), path.as_str()),
                Err(e) => Observed::Error(format!("cannot stat {path}: {e}")),
            },
            Probe::Owner { path } => match fs::symlink_metadata(path) {
                Ok(m) => Observed::value(format!("{}:{}", m.uid(), m.gid()), path.as_str()),
                Err(e) => Observed::Error(format!("cannot stat {path}: {e}")),
            },
            Probe::Symlink { path } => match fs::read_link(path) {
                Ok(t) => Observed::value(t.to_string_lossy(), path.as_str()),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Observed::value("missing", path.as_str())
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    Observed::value("not a symlink", path.as_str())
                }
                Err(e) => Observed::Error(format!("cannot read link {path}: {e}")),
            },
            Probe::FileContent { path } => match fs::read_to_string(path) {
                Ok(t) => Observed::value(collapse(&t), path.as_str()),
                Err(e) => Observed::Error(format!("cannot read {path}: {e}")),
            },
            Probe::Rlimit { resource } => rlimit(resource),
            Probe::Capabilities { set } => match status_field(set) {
                Ok(Some(hex)) => match u64::from_str_radix(&hex, 16) {
                    Ok(mask) => Observed::value(caps::mask_to_text(mask), format!("{set} {hex}")),
                    Err(_) => Observed::Error(format!("bad {set} in /proc/self/status: {hex:?}")),
                },
                Ok(None) => Observed::Error(format!("no {set} field in /proc/self/status")),
                Err(e) => Observed::Error(e),
            },
            Probe::SeccompMode => match status_field("Seccomp") {
                Ok(Some(v)) => Observed::value(v, "/proc/self/status"),
                Ok(None) => Observed::Skip(
                    "this kernel has no seccomp (no Seccomp field in /proc/self/status)".into(),
                ),
                Err(e) => Observed::Error(e),
            },
            Probe::SyscallErrno { syscall } => match sys::harmless_syscall(syscall) {
                Ok(Ok(())) => Observed::value("ok", syscall.as_str()),
                Ok(Err(errno)) => Observed::value(
                    format!("errno {errno}"),
                    format!("{syscall}: {}", io::Error::from_raw_os_error(errno)),
                ),
                Err(e) => Observed::Error(e),
            },
            Probe::CgroupMemoryMax => self.cgroup_value("memory", memory_max),
            Probe::CgroupPidsMax => {
                self.cgroup_value("pids", |dir, _| read_trimmed(&dir.join("pids.max")))
            }
            Probe::CgroupCpuMax => self.cgroup_value("cpu", cpu_max),
            Probe::Uid => {
                let (r, e) = sys::uids();
                Observed::value(real_effective(r, e), "getuid/geteuid")
            }
            Probe::Gid => {
                let (r, e) = sys::gids();
                Observed::value(real_effective(r, e), "getgid/getegid")
            }
            Probe::Groups => match sys::groups() {
                Ok(mut g) => {
                    g.sort_unstable();
                    g.dedup();
                    let text = if g.is_empty() {
                        "none".to_string()
                    } else {
                        g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                    };
                    Observed::value(text, "getgroups")
                }
                Err(e) => Observed::Error(format!("getgroups: {e}")),
            },
            Probe::Umask => match status_field("Umask") {
                Ok(Some(v)) => Observed::value(v, "/proc/self/status"),
                _ => Observed::value(format!("{:04o}", sys::umask()), "umask(2)"),
            },
            Probe::NoNewPrivs => match status_field("NoNewPrivs") {
                Ok(Some(v)) => Observed::value(v, "/proc/self/status"),
                Ok(None) => Observed::Skip(
                    "this kernel has no NoNewPrivs field in /proc/self/status".into(),
                ),
                Err(e) => Observed::Error(e),
            },
            Probe::Cwd => match std::env::current_dir() {
                Ok(d) => Observed::value(d.to_string_lossy(), "getcwd"),
                Err(e) => Observed::Error(format!("getcwd: {e}")),
            },
            Probe::Env { name } => match std::env::var_os(name) {
                Some(v) => Observed::value(v.to_string_lossy(), "environ"),
                None => Observed::value("<unset>", "environ"),
            },
            Probe::Masked { path } => self.masked(path),
            Probe::Writable { path } => writable(path),
            Probe::Sysctl { key } => {
                let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
                read_trimmed(&path)
            }
            Probe::OomScoreAdj => read_trimmed(Path::new("/proc/self/oom_score_adj")),
        }
    }

    fn cgroup_value(
        &mut self,
        controller: &str,
        read: impl Fn(&Path, bool) -> Observed,
    ) -> Observed {
        let mounts = match self.mounts() {
            Ok(m) => m,
            Err(e) => return Observed::Error(e),
        };
        let own = match fs::read_to_string("/proc/self/cgroup") {
            Ok(t) => cgroup::parse_self_cgroup(&t),
            Err(e) => return Observed::Error(format!("cannot read /proc/self/cgroup: {e}")),
        };
        let found = cgroup::locate(
            controller,
            mounts,
            &own,
            |d| d.is_dir(),
            |d| fs::read_to_string(d.join("cgroup.controllers")).ok(),
        );
        match found {
            Ok(loc) => read(&loc.dir, loc.v2),
            Err(e) => Observed::Error(e),
        }
    }

    fn masked(&mut self, path: &str) -> Observed {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Observed::value("missing", path),
            Err(e) => return Observed::Error(format!("cannot stat {path}: {e}")),
        };
        if meta.file_type().is_char_device() && sys::dev_major_minor(meta.rdev()) == (1, 3) {
            let mut buf = [0u8; 64];
            return match fs::File::open(path).and_then(|mut f| f.read(&mut buf)) {
                Ok(0) => Observed::value("masked file", format!("{path} is c 1:3, reads empty")),
                Ok(n) => Observed::value("visible", format!("{path} is c 1:3 but read {n} bytes")),
                Err(e) => Observed::Error(format!("cannot read {path}: {e}")),
            };
        }
        if meta.is_dir() {
            let fstype = match self.mounts() {
                Ok(m) => mountinfo::topmost(m, path).map(|e| e.fstype.clone()),
                Err(e) => return Observed::Error(e),
            };
            let entries = match fs::read_dir(path) {
                Ok(d) => d.count(),
                Err(e) => return Observed::Error(format!("cannot list {path}: {e}")),
            };
            return match fstype.as_deref() {
                Some("tmpfs") if entries == 0 => {
                    Observed::value("masked dir", format!("{path} is an empty tmpfs"))
                }
                Some(t) => Observed::value(
                    "visible",
                    format!("{path} is a {t} mount with {entries} entries"),
                ),
                None => Observed::value(
                    "visible",
                    format!("{path} is a directory with {entries} entries, not a mount"),
                ),
            };
        }
        Observed::value(
            "visible",
            format!("{path} is not /dev/null and not a directory"),
        )
    }
}

fn namespace(ns: &str, host_inode: u64) -> Observed {
    let path = format!("/proc/self/ns/{ns}");
    match fs::metadata(&path) {
        Ok(m) => {
            let seen = if m.ino() == host_inode { "host" } else { "new" };
            Observed::value(seen, format!("{path} inode {}, host {host_inode}", m.ino()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Observed::Skip(format!(
            "this kernel has no {ns} namespace ({path} is missing)"
        )),
        Err(e) => Observed::Error(format!("cannot stat {path}: {e}")),
    }
}

fn uts(domain: bool) -> Observed {
    match sys::uname() {
        Ok((node, dom)) => Observed::value(if domain { dom } else { node }, "uname(2)"),
        Err(e) => Observed::Error(format!("uname: {e}")),
    }
}

fn device(path: &str) -> Observed {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            let (major, minor) = sys::dev_major_minor(m.rdev());
            let text = if ft.is_char_device() {
                format!("c {major}:{minor}")
            } else if ft.is_block_device() {
                format!("b {major}:{minor}")
            } else if ft.is_symlink() {
                "not a device (symlink)".to_string()
            } else if ft.is_dir() {
                "not a device (directory)".to_string()
            } else {
                "not a device (file)".to_string()
            };
            Observed::value(text, path)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Observed::value("missing", path),
        Err(e) => Observed::Error(format!("cannot stat {path}: {e}")),
    }
}

fn rlimit(resource: &str) -> Observed {
    let Some(r) = sys::rlimit_resource(resource) else {
        return Observed::Error(format!("unknown rlimit {resource}"));
    };
    match sys::getrlimit(r) {
        Ok((soft, hard)) => {
            let t = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
            Observed::value(format!("{} {}", t(soft), t(hard)), "getrlimit")
        }
        Err(e) => Observed::Error(format!("getrlimit {resource}: {e}")),
    }
}

fn real_effective(real: u32, effective: u32) -> String {
    if real == effective {
        real.to_string()
    } else {
        format!("{real} (effective {effective})")
    }
}

/// The value of `Name:` in /proc/self/status, `None` if the kernel has no such field.
fn status_field(name: &str) -> Result<Option<String>, String> {
    let text = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    Ok(text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    }))
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_trimmed(path: &Path) -> Observed {
    match fs::read_to_string(path) {
        Ok(t) => Observed::value(t.trim(), path.display().to_string()),
        Err(e) => Observed::Error(format!("cannot read {}: {e}", path.display())),
    }
}

fn read_number(path: &Path) -> Result<i64, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds {:?}, not a number", path.display(), text.trim()))
}

/// v1 reports "no limit" as the largest page-aligned value; show it as v2 does.
const V1_MEMORY_UNLIMITED: i64 = 0x7FFF_FFFF_FFFF_F000;

fn memory_max(dir: &Path, v2: bool) -> Observed {
    if v2 {
        return read_trimmed(&dir.join("memory.max"));
    }
    let file = dir.join("memory.limit_in_bytes");
    match read_number(&file) {
        Ok(v) if v >= V1_MEMORY_UNLIMITED => Observed::value("max", file.display().to_string()),
        Ok(v) => Observed::value(v.to_string(), file.display().to_string()),
        Err(e) => Observed::Error(e),
    }
}

fn cpu_max(dir: &Path, v2: bool) -> Observed {
    if v2 {
        return read_trimmed(&dir.join("cpu.max"));
    }
    let quota_file = dir.join("cpu.cfs_quota_us");
    let period_file = dir.join("cpu.cfs_period_us");
    match (read_number(&quota_file), read_number(&period_file)) {
        (Ok(q), Ok(p)) => {
            let quota = if q < 0 {
                "max".to_string()
            } else {
                q.to_string()
            };
            Observed::value(
                format!("{quota} {p}"),
                format!("{}, {}", quota_file.display(), period_file.display()),
            )
        }
        (Err(e), _) | (_, Err(e)) => Observed::Error(e),
    }
}

fn writable(path: &str) -> Observed {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Observed::value("missing", path),
        Err(e) => return Observed::Error(format!("cannot stat {path}: {e}")),
    };
    let (attempt, what) = if meta.is_dir() {
        let probe = Path::new(path).join(format!(".berth-check-{}", std::process::id()));
        let r = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map(|_| {
                let _ = fs::remove_file(&probe);
            });
        (r, format!("create a file in {path}"))
    } else {
        // Opened for writing and closed at once: nothing is written, nothing truncated.
        let r = OpenOptions::new().write(true).open(path).map(drop);
        (r, format!("open {path} for writing"))
    };
    match attempt {
        Ok(()) => Observed::value("writable", what),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Observed::value("read-only", what),
        Err(e) => Observed::value(
            format!("errno {}", e.raw_os_error().unwrap_or(0)),
            format!("{what}: {e}"),
        ),
    }
}
