//! Parsers for `/proc/self/mountinfo` and `/proc/self/cgroup`, and the search for the
//! cgroup hierarchies they describe.
//!
//! Both parsers take the file's text, so tests feed them fake content; nothing here
//! touches the file system.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// Controllers the kernel can bind to a cgroup v1 hierarchy. Any other word among a v1
/// mount's super options (`rw`, `xattr`, `clone_children`, ...) is an option, not a controller.
pub const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The named v1 hierarchy systemd keeps its own bookkeeping in.
pub const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// One line of `/proc/self/mountinfo` (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount.
    pub mount_id: u32,
    /// Id of the parent mount.
    pub parent_id: u32,
    /// The directory of the file system that forms the root of this mount.
    pub root: PathBuf,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: PathBuf,
    /// File system type, for example `cgroup2`.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options; for cgroup v1 these name the controllers.
    pub super_options: String,
}

/// Undoes the octal escapes (`\040` for a space, ...) the kernel puts in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || CgroupError::MalformedMountInfo {
            line_no: index + 1,
            line: line.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let separator = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(malformed)?;
        if separator < 6 || fields.len() < separator + 3 {
            return Err(malformed());
        }
        entries.push(MountInfo {
            mount_id: fields[0].parse().map_err(|_| malformed())?,
            parent_id: fields[1].parse().map_err(|_| malformed())?,
            root: PathBuf::from(unescape(fields[3])),
            mount_point: PathBuf::from(unescape(fields[4])),
            fs_type: fields[separator + 1].to_string(),
            source: unescape(fields[separator + 2]),
            super_options: fields.get(separator + 3).copied().unwrap_or("").to_string(),
        });
    }
    Ok(entries)
}

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers bound to it (`cpu`, `cpuacct`), or the hierarchy's name (`name=systemd`).
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy is at the mount point (`/` unless bind-mounted).
    pub root: PathBuf,
}

/// The mounted cgroup2 file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Which cgroup is at the mount point.
    pub root: PathBuf,
}

/// The cgroup hierarchies visible to the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 hierarchies with at least one controller, plus `name=systemd`; one entry per
    /// hierarchy, in mountinfo order.
    pub v1: Vec<V1Mount>,
    /// The cgroup2 mount, if any.
    pub v2: Option<V2Mount>,
}

impl CgroupMounts {
    /// The v1 hierarchy a controller (or `name=...`) is bound to.
    pub fn v1_for(&self, controller: &str) -> Option<&V1Mount> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
    }

    /// Whether any v1 hierarchy carries a real controller (not only a name).
    pub fn has_v1_controllers(&self) -> bool {
        self.v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")))
    }
}

/// Whether `ancestor` is `mount` itself or one of the mounts it sits on, following
/// parent ids.
fn is_tree_ancestor(entries: &[MountInfo], ancestor: &MountInfo, mount: &MountInfo) -> bool {
    let mut current = mount;
    // Bounded walk, in case the ids form a cycle.
    for _ in 0..=entries.len() {
        if current.mount_id == ancestor.mount_id {
            return true;
        }
        match entries.iter().find(|e| e.mount_id == current.parent_id) {
            Some(parent) if parent.mount_id != current.mount_id => current = parent,
            _ => return false,
        }
    }
    false
}

/// Whether `mount` is hidden: another mount sits on its mount point or on a directory
/// above it without being one of the mounts `mount` itself sits on. (A mount made on
/// top of a directory later is either stacked on `mount` or a sibling of it; either
/// way it is not in `mount`'s parent chain.) The order of mountinfo lines is not used.
fn is_hidden(entries: &[MountInfo], mount: &MountInfo) -> bool {
    entries.iter().any(|other| {
        other.mount_id != mount.mount_id
            && mount.mount_point.starts_with(&other.mount_point)
            && !is_tree_ancestor(entries, other, mount)
    })
}

/// Finds the cgroup hierarchies among mountinfo entries. Hidden mounts are skipped;
/// for each controller the first visible hierarchy wins.
pub fn find_cgroup_mounts(entries: &[MountInfo]) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for entry in entries {
        if entry.fs_type != "cgroup" && entry.fs_type != "cgroup2" {
            continue;
        }
        if is_hidden(entries, entry) {
            continue;
        }
        if entry.fs_type == "cgroup2" {
            if mounts.v2.is_none() {
                mounts.v2 = Some(V2Mount {
                    mount_point: entry.mount_point.clone(),
                    root: entry.root.clone(),
                });
            }
            continue;
        }
        let controllers: Vec<String> = entry
            .super_options
            .split(',')
            .filter(|opt| V1_CONTROLLERS.contains(opt) || *opt == SYSTEMD_HIERARCHY)
            .map(str::to_string)
            .collect();
        if controllers.is_empty() || controllers.iter().any(|c| seen.contains(c)) {
            continue;
        }
        seen.extend(controllers.iter().cloned());
        mounts.v1.push(V1Mount {
            controllers,
            mount_point: entry.mount_point.clone(),
            root: entry.root.clone(),
        });
    }
    mounts
}

/// The process's own cgroups, from `/proc/self/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// v1 lines: the controllers of the hierarchy and the process's path in it.
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The `0::/path` line of cgroup v2.
    pub unified: Option<PathBuf>,
}

impl ProcCgroups {
    /// The process's path in the v1 hierarchy that carries any of `controllers`.
    pub fn v1_path(&self, controllers: &[String]) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(line, _)| line.iter().any(|c| controllers.contains(c)))
            .map(|(_, path)| path.as_path())
    }
}

/// Parses the text of `/proc/<pid>/cgroup` (`hierarchy-id:controller-list:path`).
pub fn parse_proc_cgroup(text: &str) -> Result<ProcCgroups> {
    let mut out = ProcCgroups::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || CgroupError::MalformedProcCgroup {
            line_no: index + 1,
            line: line.to_string(),
        };
        let mut parts = line.splitn(3, ':');
        let id = parts.next().ok_or_else(malformed)?;
        let list = parts.next().ok_or_else(malformed)?;
        let path = parts.next().ok_or_else(malformed)?;
        id.parse::<u32>().map_err(|_| malformed())?;
        if !path.starts_with('/') {
            return Err(malformed());
        }
        if id == "0" && list.is_empty() {
            out.unified = Some(PathBuf::from(path));
        } else {
            let controllers = list.split(',').map(str::to_string).collect();
            out.v1.push((controllers, PathBuf::from(path)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_fields_including_optional_ones() {
        let entries = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(entries.len(), 6);
        let memory = &entries[3];
        assert_eq!(memory.mount_id, 35);
        assert_eq!(memory.parent_id, 31);
        assert_eq!(memory.root, Path::new("/"));
        assert_eq!(memory.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(memory.fs_type, "cgroup");
        assert_eq!(memory.source, "cgroup");
        assert_eq!(memory.super_options, "rw,memory");
    }

    #[test]
    fn unescapes_octal_sequences_in_paths() {
        let text = r"50 1 0:40 /a\040b /mnt/with\040space\134x rw - cgroup2 none rw";
        let entries = parse_mountinfo(text).unwrap();
        assert_eq!(entries[0].root, Path::new("/a b"));
        assert_eq!(entries[0].mount_point, Path::new("/mnt/with space\\x"));
    }

    #[test]
    fn rejects_line_without_separator() {
        let err = parse_mountinfo("1 2 0:1 / /x rw cgroup2 none rw").unwrap_err();
        assert!(matches!(
            err,
            CgroupError::MalformedMountInfo { line_no: 1, .. }
        ));
    }

    #[test]
    fn rejects_non_numeric_id() {
        let err = parse_mountinfo("x 2 0:1 / /x rw - cgroup2 none rw").unwrap_err();
        assert!(matches!(err, CgroupError::MalformedMountInfo { .. }));
    }

    #[test]
    fn finds_hybrid_hierarchies() {
        let mounts = find_cgroup_mounts(&parse_mountinfo(HYBRID).unwrap());
        let names: Vec<_> = mounts.v1.iter().map(|m| m.controllers.join(",")).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "name=systemd"]);
        assert_eq!(
            mounts.v2.as_ref().unwrap().mount_point,
            Path::new("/sys/fs/cgroup/unified")
        );
        assert!(mounts.has_v1_controllers());
        assert_eq!(
            mounts.v1_for("memory").unwrap().mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn comounted_controllers_share_one_hierarchy() {
        let text = "1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct,clone_children";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert_eq!(mounts.v1.len(), 1);
        assert_eq!(mounts.v1[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            mounts.v1_for("cpuacct").unwrap().mount_point,
            Path::new("/cg/cpu,cpuacct")
        );
    }

    #[test]
    fn second_mount_of_same_hierarchy_is_ignored() {
        let text = "\
1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory
2 0 0:1 /sub /elsewhere rw - cgroup cgroup rw,memory
";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert_eq!(mounts.v1.len(), 1);
        assert_eq!(mounts.v1[0].mount_point, Path::new("/cg/memory"));
    }

    #[test]
    fn mount_hidden_by_mount_on_parent_directory_is_skipped() {
        let text = "\
1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
2 0 0:2 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert!(mounts.v1.is_empty());
        assert!(mounts.v2.is_some());
    }

    #[test]
    fn mount_stacked_on_same_directory_hides_the_one_below() {
        let text = "\
1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
2 1 0:2 / /sys/fs/cgroup/memory rw - tmpfs tmpfs rw
";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert!(mounts.v1.is_empty());
    }

    #[test]
    fn line_order_does_not_matter() {
        // As on the development machine, "/" is listed after the mounts below it.
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
23 27 0:22 / /sys rw - sysfs sysfs rw
27 1 254:0 / / rw - ext4 /dev/vda rw
";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert_eq!(mounts.v1.len(), 1);
    }

    #[test]
    fn other_named_hierarchies_are_ignored() {
        let text = "1 0 0:1 / /cg/foo rw - cgroup cgroup rw,name=foo";
        let mounts = find_cgroup_mounts(&parse_mountinfo(text).unwrap());
        assert!(mounts.v1.is_empty());
    }

    #[test]
    fn parses_proc_cgroup() {
        let text = "\
9:name=systemd:/
4:memory:/process_api/abc
2:cpu,cpuacct:/a:b
0::/
";
        let own = parse_proc_cgroup(text).unwrap();
        assert_eq!(own.unified.as_deref(), Some(Path::new("/")));
        assert_eq!(
            own.v1_path(&["memory".to_string()]),
            Some(Path::new("/process_api/abc"))
        );
        assert_eq!(
            own.v1_path(&["cpuacct".to_string()]),
            Some(Path::new("/a:b"))
        );
        assert_eq!(own.v1_path(&["pids".to_string()]), None);
    }

    #[test]
    fn rejects_proc_cgroup_line_without_path() {
        let err = parse_proc_cgroup("4:memory").unwrap_err();
        assert!(matches!(
            err,
            CgroupError::MalformedProcCgroup { line_no: 1, .. }
        ));
    }
}
