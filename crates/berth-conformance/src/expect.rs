//! The expectations file the harness writes into the rootfs, and the lines the checker prints.

use serde::{Deserialize, Serialize};

/// The expectations file (`argv[1]` of `berth-check`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expectations {
    /// The case these checks belong to; echoed in every result line.
    pub case: String,
    pub checks: Vec<Check>,
}

/// One check: observe `probe`, compare with `expect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// Unique within the case, e.g. `mount /dev/shm noexec`.
    pub name: String,
    pub probe: Probe,
    /// The expected observation, in the canonical text each [`Probe`] documents.
    pub expect: String,
    /// Negative control: pass only if the observation differs from `expect`.
    #[serde(default)]
    pub negate: bool,
}

/// What the checker observes inside the container, and the text it observes it as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// `/proc/self/ns/<ns>`: `new` if its inode differs from `host_inode`, else `host`.
    Namespace { ns: String, host_inode: u64 },
    /// uname(2) nodename.
    Hostname,
    /// uname(2) domainname.
    Domainname,
    /// The file system type of the topmost mount on `destination`, `absent` if none.
    MountType { destination: String },
    /// A per-mount option (`ro`, `nosuid`, `nodev`, `noexec`) of the topmost mount on
    /// `destination`: `set` or `unset`.
    MountOption { destination: String, option: String },
    /// `c MAJ:MIN`, `b MAJ:MIN`, `missing`, or `not a device (<type>)`; links are not followed.
    Device { path: String },
    /// The permission bits, four octal digits (`0666`).
    FileMode { path: String },
    /// `uid:gid` of the file.
    Owner { path: String },
    /// The target of a symbolic link, or `not a symlink`.
    Symlink { path: String },
    /// The whole content, whitespace runs collapsed to one space and trimmed.
    FileContent { path: String },
    /// getrlimit(2) of `RLIMIT_<NAME>`: `soft hard`, `unlimited` for RLIM_INFINITY.
    Rlimit { resource: String },
    /// A capability set from /proc/self/status (`CapEff`, `CapPrm`, `CapBnd`, `CapInh`,
    /// `CapAmb`), as [`crate::caps::mask_to_text`] writes it.
    Capabilities { set: String },
    /// The `Seccomp:` field of /proc/self/status.
    SeccompMode,
    /// Calls `syscall` (from a fixed list of harmless ones): `ok` or `errno N`.
    SyscallErrno { syscall: String },
    /// The memory limit of the container's own cgroup in bytes, or `max`.
    CgroupMemoryMax,
    /// `pids.max` of the container's own cgroup.
    CgroupPidsMax,
    /// CPU bandwidth of the container's own cgroup: `<quota|max> <period>`.
    CgroupCpuMax,
    /// Real uid, with the effective one added when it differs.
    Uid,
    /// Real gid, with the effective one added when it differs.
    Gid,
    /// Supplementary groups, sorted, comma-separated, `none` if empty.
    Groups,
    /// The umask, four octal digits.
    Umask,
    /// The `NoNewPrivs:` field of /proc/self/status.
    NoNewPrivs,
    /// The working directory.
    Cwd,
    /// The value of an environment variable, `<unset>` if absent.
    Env { name: String },
    /// `masked file` (reads as /dev/null), `masked dir` (an empty tmpfs), `visible`, or
    /// `missing`.
    Masked { path: String },
    /// `read-only` (EROFS), `writable`, or `errno N`. A directory is probed by creating a
    /// file in it (removed again), a file by opening it for writing without writing.
    Writable { path: String },
    /// The value of `/proc/sys/<key with dots as slashes>`, trimmed.
    Sysctl { key: String },
    /// /proc/self/oom_score_adj.
    OomScoreAdj,
}

/// The outcome of one check or case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One result line printed by the checker (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub case: String,
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The canonical value, and where it came from (a file, a syscall) for the report.
    Value { value: String, source: String },
    /// The observation could not be made: fails whether or not the check is negated.
    Error(String),
    /// The kernel lacks what the probe needs.
    Skip(String),
}

impl Observed {
    pub fn value(value: impl Into<String>, source: impl Into<String>) -> Observed {
        Observed::Value {
            value: value.into(),
            source: source.into(),
        }
    }
}

/// The verdict of one check and its one-line detail.
pub fn judge(expect: &str, negate: bool, observed: &Observed) -> (Status, String) {
    match observed {
        Observed::Value { value, source } => {
            let holds = value == expect;
            let status = if holds != negate {
                Status::Pass
            } else {
                Status::Fail
            };
            let not = if negate { "not " } else { "" };
            let from = if source.is_empty() {
                String::new()
            } else {
                format!(" ({source})")
            };
            (
                status,
                format!("expected {not}{expect:?}, observed {value:?}{from}"),
            )
        }
        Observed::Error(e) => (Status::Fail, e.clone()),
        Observed::Skip(reason) => (Status::Skip, reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_value_passes_and_its_negation_fails() {
        let seen = Observed::value("64", "pids.max");
        assert_eq!(judge("64", false, &seen).0, Status::Pass);
        assert_eq!(judge("64", true, &seen).0, Status::Fail);
    }

    #[test]
    fn different_value_fails_and_its_negation_passes() {
        let seen = Observed::value("max", "pids.max");
        let (status, detail) = judge("64", false, &seen);
        assert_eq!(status, Status::Fail);
        assert_eq!(detail, "expected \"64\", observed \"max\" (pids.max)");
        assert_eq!(judge("64", true, &seen).0, Status::Pass);
    }

    #[test]
    fn errors_fail_in_both_modes_and_skips_stay_skips() {
        let err = Observed::Error("cannot read pids.max: ENOENT".into());
        assert_eq!(judge("64", false, &err).0, Status::Fail);
        assert_eq!(judge("64", true, &err).0, Status::Fail);
        let skip = Observed::Skip("no seccomp in this kernel".into());
        assert_eq!(judge("2", true, &skip).0, Status::Skip);
    }

    #[test]
    fn probes_round_trip_through_json() {
        let check = Check {
            name: "mount /sys ro".into(),
            probe: Probe::MountOption {
                destination: "/sys".into(),
                option: "ro".into(),
            },
            expect: "set".into(),
            negate: false,
        };
        let text = serde_json::to_string(&check).unwrap();
        assert!(text.contains("\"kind\":\"mount_option\""), "{text}");
        let back: Check = serde_json::from_str(&text).unwrap();
        assert_eq!(back.probe, check.probe);
        assert!(!back.negate);
    }
}
