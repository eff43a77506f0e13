//! Container state on disk: `<root>/<id>/state.json`, the exec fifo, and the per-container lock.
//!
//! The saved record is what `create` learnt; the status is derived each time from the init
//! process (alive, same start time), the exec fifo (present until `start`), and the freezer.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub const STATE_FILE: &str = "state.json";
/// The config the container was created with, kept in its state directory.
pub const CONFIG_COPY: &str = "config.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// The lifecycle of a container, as the runtime spec names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What a lifecycle command wants to do to a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Kill,
    Delete,
    ForceDelete,
    Pause,
    Resume,
    Exec,
    Update,
    Events,
}

impl Op {
    /// Why `self` cannot be done to a container in `status`, in runc's words: container
    /// engines decide by them (containerd and CRI-O take "container not running" from
    /// `kill` as "already stopped"; anything else fails a pod's stop).
    pub fn refusal(self, status: Status) -> String {
        match (self, status) {
            (Op::Start, Status::Running) => "cannot start an already running container".into(),
            (Op::Start, Status::Stopped) => "cannot start a container that has stopped".into(),
            (Op::Start, Status::Paused) => "cannot start a container in the paused state".into(),
            (Op::Delete, Status::Running | Status::Paused) => {
                format!("cannot delete container that is not stopped: {status}")
            }
            (Op::Exec, Status::Stopped) => "cannot exec in a stopped container".into(),
            (Op::Exec, Status::Paused) => {
                "cannot exec in a paused container (use --ignore-paused to override)".into()
            }
            (Op::Resume, _) => "container not paused".into(),
            (Op::Kill | Op::Pause | Op::Update | Op::Events, _) => "container not running".into(),
            (Op::Start | Op::Delete | Op::ForceDelete | Op::Exec, _) => {
                let name = match self {
                    Op::Start => "start",
                    Op::Delete | Op::ForceDelete => "delete",
                    _ => "exec in",
                };
                format!("cannot {name} a container that is {status}")
            }
        }
    }
}

impl Status {
    /// The one place that says which operation each status allows.
    pub fn check(self, op: Op) -> Result<()> {
        let ok = match (op, self) {
            (Op::Start, Status::Created) => true,
            (Op::Start, Status::Creating)
            | (Op::Start, Status::Running)
            | (Op::Start, Status::Paused)
            | (Op::Start, Status::Stopped) => false,
            (Op::Kill, Status::Created)
            | (Op::Kill, Status::Running)
            | (Op::Kill, Status::Paused) => true,
            (Op::Kill, Status::Creating) | (Op::Kill, Status::Stopped) => false,
            (Op::Delete, Status::Created)
            | (Op::Delete, Status::Stopped)
            | (Op::Delete, Status::Creating) => true,
            (Op::Delete, Status::Running) | (Op::Delete, Status::Paused) => false,
            (Op::ForceDelete, Status::Creating)
            | (Op::ForceDelete, Status::Created)
            | (Op::ForceDelete, Status::Running)
            | (Op::ForceDelete, Status::Paused)
            | (Op::ForceDelete, Status::Stopped) => true,
            (Op::Pause, Status::Running) => true,
            (Op::Pause, Status::Creating)
            | (Op::Pause, Status::Created)
            | (Op::Pause, Status::Paused)
            | (Op::Pause, Status::Stopped) => false,
            (Op::Exec, Status::Created) | (Op::Exec, Status::Running) => true,
            (Op::Exec, Status::Creating)
            | (Op::Exec, Status::Paused)
            | (Op::Exec, Status::Stopped) => false,
            (Op::Update, Status::Created)
            | (Op::Update, Status::Running)
            | (Op::Update, Status::Paused) => true,
            (Op::Update, Status::Creating) | (Op::Update, Status::Stopped) => false,
            (Op::Events, Status::Created)
            | (Op::Events, Status::Running)
            | (Op::Events, Status::Paused) => true,
            (Op::Events, Status::Creating) | (Op::Events, Status::Stopped) => false,
            (Op::Resume, Status::Paused) => true,
            (Op::Resume, Status::Creating)
            | (Op::Resume, Status::Created)
            | (Op::Resume, Status::Running)
            | (Op::Resume, Status::Stopped) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadState { op, status: self })
        }
    }
}

/// The record `create` leaves behind for later commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's init; 0 while creating.
    pub pid: i32,
    /// Start time of the init (field 22 of /proc/pid/stat), against pid reuse.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Option<berth_cgroups::Manager>,
    /// Whether the container has its own pid namespace (then killing init kills all).
    pub own_pid_ns: bool,
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// A container in the host's mount namespace: the ids of the mounts below its rootfs
    /// before create. Everything else mounted there is the container's, for delete to
    /// remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mounts: Option<Vec<u32>>,
    pub status: Status,
}

/// The state JSON that `berth state` prints and hooks receive (runtime spec "State").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl Saved {
    pub fn report(&self, status: Status) -> Report<'_> {
        Report {
            oci_version: &self.oci_version,
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// A container's state directory, held under an exclusive lock for the life of this value.
#[derive(Debug)]
pub struct StateDir {
    pub dir: PathBuf,
    pub id: String,
    _lock: File,
}

impl StateDir {
    /// Makes the directory for a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .ctx(|| format!("create state root {}", root.display()))?;
        check_root(root)?;
        let dir = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()))
            }
            Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
        }
        let lock = lock_dir(&dir)?;
        Ok(StateDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    /// Opens and locks an existing container's directory; waits for a concurrent command.
    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        check_root(root)?;
        let dir = root.join(id);
        loop {
            let lock = match File::open(&dir) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(id.to_string()))
                }
                Err(e) => return Err(Error::io(format!("open {}", dir.display()), e)),
            };
            flock_exclusive(&lock, &dir)?;
            // A concurrent delete may have removed the directory while we waited.
            let same = match fs::metadata(&dir) {
                Ok(m) => {
                    let held = lock.metadata().ctx(|| format!("stat {}", dir.display()))?;
                    m.ino() == held.ino() && m.dev() == held.dev()
                }
                Err(_) => false,
            };
            if !same {
                if dir.exists() {
                    continue;
                }
                return Err(Error::NotFound(id.to_string()));
            }
            return Ok(StateDir {
                dir,
                id: id.to_string(),
                _lock: lock,
            });
        }
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    pub fn load(&self) -> Result<Saved> {
        load_saved(&self.dir)
    }

    /// Writes state.json atomically (temp file, rename). No fsync: the state root is a tmpfs
    /// (/run) in production and does not outlive a reboot anyway.
    pub fn save(&self, saved: &Saved) -> Result<()> {
        let data = serde_json::to_vec(saved).expect("state always serializes");
        write_atomic(&self.dir.join(STATE_FILE), &data, 0o600)
    }

    /// Keeps the config the container is created with, for the commands that follow
    /// (exec, checkpoint): they must not obey a config.json edited or replaced in the
    /// bundle since (threat model F5); runc keeps its config in its state too.
    pub fn save_config(&self, spec: &oci_spec::runtime::Spec) -> Result<()> {
        let data = serde_json::to_vec(spec).expect("a spec always serializes");
        write_atomic(&self.dir.join(CONFIG_COPY), &data, 0o600)
    }

    /// The config the container was created with; for a container an older berth made,
    /// which kept none, the bundle's.
    pub fn config(&self, saved: &Saved) -> Result<oci_spec::runtime::Spec> {
        let kept = self.dir.join(CONFIG_COPY);
        let path = match kept.exists() {
            true => kept,
            false => saved.bundle.join("config.json"),
        };
        let data = fs::read(&path).ctx(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&data).map_err(|e| Error::ConfigParse {
            file: path,
            source: e,
        })
    }

    /// Removes the directory and everything in it; the lock goes with it.
    pub fn remove(self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.dir.display()), e)),
        }
    }
}

pub fn load_saved(dir: &Path) -> Result<Saved> {
    let path = dir.join(STATE_FILE);
    let data = fs::read(&path).ctx(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::ConfigParse {
        file: path,
        source: e,
    })
}

fn lock_dir(dir: &Path) -> Result<File> {
    let f = File::open(dir).ctx(|| format!("open {}", dir.display()))?;
    flock_exclusive(&f, dir)?;
    Ok(f)
}

fn flock_exclusive(f: &File, dir: &Path) -> Result<()> {
    loop {
        // SAFETY: flock(2) on an fd we own for the duration of the call.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        match nix::errno::Errno::result(rc) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("lock {}", dir.display()), e)),
        }
    }
}

/// The state root must be berth's own: whoever can write it decides the hooks `delete`
/// runs, the cgroups it removes and the bundle `exec` reads. A missing root is left to
/// the caller (nothing to trust or distrust yet).
pub fn check_root(root: &Path) -> Result<()> {
    let meta = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat state root {}", root.display()), e)),
    };
    let me = nix::unistd::geteuid().as_raw();
    let bad = |why: String| {
        Err(Error::Unsupported(format!(
            "state root {}: {why}; berth trusts only a root it owns and no one else can write",
            root.display()
        )))
    };
    if !meta.is_dir() {
        return bad("not a directory".into());
    }
    if meta.uid() != me {
        return bad(format!("owned by uid {}, not by uid {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return bad(format!(
            "writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Writes a file by temp-and-rename so that a reader never sees half of it.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh name, made exclusively and never through a link: the directory may be one
    // others can write (a --pid-file in /tmp), where a planted link would have root
    // overwrite its target.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = parent.join(format!(".{name}.{}.{nanos:09}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| {
            Error::io(
                format!("write {} (via {})", path.display(), tmp.display()),
                e,
            )
        })?;
    let res = f.write_all(data).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", path.display()), e));
    }
    Ok(())
}

/// runc's rule: letters, digits, `_`, `+`, `-`, `.`; not `.` or `..`; at most 1024 bytes.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id == "." || id == ".." {
        return bad("must not be . or ..");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("may contain only letters, digits, '_', '+', '-' and '.'");
    }
    Ok(())
}

/// What /proc/<pid>/stat says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&s)
}

/// Parses state (field 3) and starttime (field 22); the comm field may hold spaces and ')'.
pub fn parse_proc_stat(s: &str) -> Option<ProcStat> {
    // `)` is one byte, so the index after it is a char boundary even at the end of `s`.
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // rest starts at field 3; starttime is field 22 → index 19 after state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// True when `pid` is the same live (non-zombie) process that was saved.
pub fn pid_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Some(st) => st.start_time == start && st.state != 'Z' && st.state != 'X',
        None => false,
    }
}

/// RFC 3339 UTC timestamp with nanoseconds, as runc writes `created`.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        tod / 3600,
        (tod % 3600) / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_x+y", "A9"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn transitions() {
        Status::Created.check(Op::Start).unwrap();
        assert_eq!(
            Status::Running.check(Op::Start).unwrap_err().to_string(),
            "cannot start an already running container"
        );
        assert_eq!(
            Status::Stopped.check(Op::Kill).unwrap_err().to_string(),
            "container not running"
        );
        assert_eq!(
            Status::Paused.check(Op::Exec).unwrap_err().to_string(),
            "cannot exec in a paused container (use --ignore-paused to override)"
        );
        Status::Created.check(Op::Exec).unwrap();
        Status::Paused.check(Op::Update).unwrap();
        assert!(Status::Running.check(Op::Delete).is_err());
        Status::Running.check(Op::ForceDelete).unwrap();
        Status::Created.check(Op::Delete).unwrap();
        Status::Running.check(Op::Pause).unwrap();
        assert!(Status::Created.check(Op::Pause).is_err());
        Status::Paused.check(Op::Resume).unwrap();
        assert_eq!(
            Status::Running.check(Op::Resume).unwrap_err().to_string(),
            "container not paused"
        );
    }

    #[test]
    fn stat_parsing_handles_odd_comm() {
        let line = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        let st = parse_proc_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 123456);
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pid");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, b"42", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "42");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn stat_cut_short_after_comm_is_none() {
        assert_eq!(parse_proc_stat("42 (a)"), None);
        assert_eq!(parse_proc_stat("42 (a)\u{e9}"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).unwrap();
        assert!(pid_alive(me, st.start_time));
        assert!(!pid_alive(me, st.start_time + 1));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_709_251_199, 5),
            "2024-02-29T23:59:59.000000005Z"
        );
        assert_eq!(
            format_rfc3339(951_782_400, 0),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn create_twice_is_exists_and_open_missing_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let d = StateDir::create(root.path(), "c1").unwrap();
        drop(d);
        assert!(matches!(
            StateDir::create(root.path(), "c1"),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            StateDir::open(root.path(), "nope"),
            Err(Error::NotFound(_))
        ));
        let d = StateDir::open(root.path(), "c1").unwrap();
        d.remove().unwrap();
        assert!(matches!(
            StateDir::open(root.path(), "c1"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
