//! What the harness learns about the host before any case runs: the namespaces it is in, the
//! cgroup controllers the kernel offers, seccomp, its capability bounding set and rlimits.
//! Cases use these to expect "same as the host" and to skip what this kernel lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use berth_conformance::mountinfo;

/// The namespaces a runtime can create, by their /proc/self/ns name.
pub const NAMESPACES: &[&str] = &["pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time"];

pub struct Host {
    /// Inode of /proc/self/ns/<name> for each namespace this kernel has.
    pub ns_inodes: BTreeMap<String, u64>,
    /// Controllers bound to a mounted cgroup v1 hierarchy.
    pub cgroup_v1: BTreeSet<String>,
    /// Controllers the root of a mounted cgroup2 offers.
    pub cgroup_v2: BTreeSet<String>,
    /// Whether CPU bandwidth (cfs quota) files exist.
    pub cpu_bandwidth: bool,
    /// Whether /proc/self/status has a Seccomp field.
    pub seccomp: bool,
    /// This process's capability bounding set.
    pub bounding: u64,
    /// This process's pid, for namespace paths of the host.
    pub pid: u32,
}

impl Host {
    pub fn probe() -> Result<Host, String> {
        let mut ns_inodes = BTreeMap::new();
        for ns in NAMESPACES {
            if let Ok(m) = fs::metadata(format!("/proc/self/ns/{ns}")) {
                ns_inodes.insert((*ns).to_string(), m.ino());
            }
        }
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mounts = mountinfo::parse(&text)?;
        let mut cgroup_v1 = BTreeSet::new();
        let mut cgroup_v2 = BTreeSet::new();
        let mut cpu_bandwidth = false;
        for m in &mounts {
            match m.fstype.as_str() {
                "cgroup" => {
                    for o in &m.super_options {
                        if KNOWN_CONTROLLERS.contains(&o.as_str()) {
                            cgroup_v1.insert(o.clone());
                        }
                    }
                    if m.super_options.iter().any(|o| o == "cpu")
                        && PathBuf::from(&m.mount_point)
                            .join("cpu.cfs_quota_us")
                            .exists()
                    {
                        cpu_bandwidth = true;
                    }
                }
                "cgroup2" => {
                    let list = fs::read_to_string(
                        PathBuf::from(&m.mount_point).join("cgroup.controllers"),
                    )
                    .unwrap_or_default();
                    cgroup_v2.extend(list.split_whitespace().map(str::to_string));
                }
                _ => {}
            }
        }
        // On cgroup2 the cpu controller always has cpu.max (CONFIG_CFS_BANDWIDTH aside).
        if !cgroup_v1.contains("cpu") && cgroup_v2.contains("cpu") {
            cpu_bandwidth = true;
        }
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then(|| v.trim().to_string())
            })
        };
        let bounding = field("CapBnd")
            .and_then(|h| u64::from_str_radix(&h, 16).ok())
            .ok_or("no CapBnd in /proc/self/status")?;
        Ok(Host {
            ns_inodes,
            cgroup_v1,
            cgroup_v2,
            cpu_bandwidth,
            seccomp: field("Seccomp").is_some(),
            bounding,
            pid: std::process::id(),
        })
    }

    /// Whether a runtime could put a limit of `controller` on a container here.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.cgroup_v1.contains(controller) || self.cgroup_v2.contains(controller)
    }

    /// Why a controller is unavailable, for a skip.
    pub fn controller_missing(&self, controller: &str) -> String {
        format!(
            "this kernel offers no {controller} cgroup controller (v1 hierarchies: {}; cgroup2: {})",
            list(&self.cgroup_v1),
            list(&self.cgroup_v2)
        )
    }

    /// This process's hard limit for `resource`, `None` for unlimited.
    pub fn rlimit_hard(resource: libc::__rlimit_resource_t) -> Option<u64> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is a valid, writable rlimit that outlives the call.
        if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_max == libc::RLIM_INFINITY {
            return None;
        }
        Some(r.rlim_max)
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".to_string()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// cgroup v1 super options that name a controller (the rest are mount options).
const KNOWN_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];
