//! Pieces shared by Berth's fuzz targets: a fake host for the cgroup manager, a scratch
//! directory for production functions that read a path, and the properties that must hold
//! for any input.
//!
//! The fake host lives in a temporary directory made once per fuzzing process. libFuzzer
//! leaves through `exit()`, so the directory is not removed; `scripts/fuzz.sh` points
//! `TMPDIR` at a directory of its own and removes that.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use berth_cgroups::{Manager, SystemView};

/// The process's own cgroup in every hierarchy of the fake host (relative locations go
/// below it).
pub const OWN_CGROUP: &str = "/berth-fuzz";

/// cgroup v1 hierarchies of the fake host: mount directory and super options.
const V1_HIERARCHIES: &[(&str, &str)] = &[
    ("cpu,cpuacct", "cpu,cpuacct"),
    ("cpuset", "cpuset"),
    ("memory", "memory"),
    ("devices", "devices"),
    ("freezer", "freezer"),
    ("blkio", "blkio"),
    ("pids", "pids"),
    ("hugetlb", "hugetlb"),
    ("net_cls,net_prio", "net_cls,net_prio"),
    ("rdma", "rdma"),
    ("misc", "misc"),
    ("systemd", "xattr,name=systemd"),
];

/// What the cgroup2 root offers on a unified host.
const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc";

/// The cgroup layouts the fake host shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// v1 hierarchies under /sys/fs/cgroup, plus cgroup2 (no controllers) at
    /// /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Unified, Layout::Hybrid, Layout::Legacy];

    /// A layout chosen from a number taken from the input (its length, say), so that one
    /// input always meets the same host and a crash reproduces.
    pub fn pick(n: usize) -> Layout {
        Self::ALL[n % Self::ALL.len()]
    }
}

/// A temporary directory that stands for `/`: cgroup mount points holding the runtime's
/// own cgroup, `cgroup.controllers` files, hugepage sizes and `/run/systemd/system`.
#[derive(Debug)]
pub struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    /// The fake host of this process, made on first use.
    pub fn get() -> &'static FakeHost {
        static HOST: OnceLock<FakeHost> = OnceLock::new();
        HOST.get_or_init(FakeHost::new)
    }

    fn new() -> FakeHost {
        let dir = tempfile::Builder::new()
            .prefix("berth-fuzz-host.")
            .tempdir()
            .expect("make the fake host's directory");
        let host = FakeHost { dir };
        let own = OWN_CGROUP.trim_start_matches('/');
        for (name, _) in V1_HIERARCHIES {
            mkdir(&host.path("/sys/fs/cgroup").join(name).join(own));
        }
        for (dir, controllers) in [
            ("/sys/fs/cgroup", V2_CONTROLLERS),
            ("/sys/fs/cgroup/unified", ""),
        ] {
            let root = host.path(dir);
            for d in [root.clone(), root.join(own)] {
                mkdir(&d);
                write(&d.join("cgroup.controllers"), controllers);
                write(&d.join("cgroup.subtree_control"), "");
            }
        }
        for size in ["hugepages-2048kB", "hugepages-1048576kB"] {
            mkdir(&host.path("/sys/kernel/mm/hugepages").join(size));
        }
        mkdir(&host.path("/run/systemd/system"));
        mkdir(&host.scratch());
        host
    }

    /// The fake root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `path`, absolute as the host names it, inside the fake root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// A directory for files that a production function reads by path.
    pub fn scratch(&self) -> PathBuf {
        self.path("/scratch")
    }

    /// `/proc/self/mountinfo` and `/proc/self/cgroup` of the host in `layout`.
    pub fn view(&self, layout: Layout) -> SystemView {
        let mut mountinfo = String::from(
            "1 0 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             20 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw\n",
        );
        let mut proc_cgroup = String::new();
        if layout == Layout::Unified {
            mountinfo.push_str(
                "30 20 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
            );
            proc_cgroup.push_str(&format!("0::{OWN_CGROUP}\n"));
        } else {
            mountinfo.push_str(
                "30 20 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755\n",
            );
            for (i, (name, options)) in V1_HIERARCHIES.iter().enumerate() {
                let id = 31 + i;
                mountinfo.push_str(&format!(
                    "{id} 30 0:{id} / /sys/fs/cgroup/{name} rw,nosuid,nodev,noexec,relatime shared:{id} - cgroup cgroup rw,{options}\n"
                ));
                let controllers = options.trim_start_matches("xattr,");
                proc_cgroup.push_str(&format!("{}:{controllers}:{OWN_CGROUP}\n", i + 1));
            }
            if layout == Layout::Hybrid {
                mountinfo.push_str(
                    "60 30 0:60 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
                );
                proc_cgroup.push_str(&format!("0::{OWN_CGROUP}\n"));
            }
        }
        SystemView {
            root: self.root().to_path_buf(),
            mountinfo,
            proc_self_cgroup: proc_cgroup,
        }
    }

    /// Where the cgroup hierarchies of `layout` are mounted, inside the fake root.
    pub fn mount_points(&self, layout: Layout) -> Vec<PathBuf> {
        match layout {
            Layout::Unified => vec![self.path("/sys/fs/cgroup")],
            Layout::Hybrid | Layout::Legacy => {
                let mut points: Vec<PathBuf> = V1_HIERARCHIES
                    .iter()
                    .map(|(name, _)| self.path("/sys/fs/cgroup").join(name))
                    .collect();
                if layout == Layout::Hybrid {
                    points.push(self.path("/sys/fs/cgroup/unified"));
                }
                points
            }
        }
    }
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The cgroup manager's promise (see `berth_cgroups::path`): every directory it would
/// create and later remove lies strictly below the mount point of its hierarchy and is
/// reached from there by plain names. A `cgroupsPath` that names a hierarchy's root or
/// climbs out of it must have been refused. Panics otherwise.
pub fn assert_confined(manager: &Manager, mount_points: &[PathBuf]) {
    for dir in manager.cgroup_dirs() {
        let below = mount_points.iter().any(|point| {
            dir.strip_prefix(point).is_ok_and(|rest| {
                !rest.as_os_str().is_empty()
                    && rest.components().all(|c| matches!(c, Component::Normal(_)))
            })
        });
        assert!(
            below,
            "cgroup directory {} is not below any of the mount points {mount_points:?}",
            dir.display()
        );
    }
}

/// Writes `data` to `name` in the scratch directory and returns its path.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = FakeHost::get().scratch().join(name);
    fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
