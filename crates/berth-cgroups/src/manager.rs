//! The [`Manager`]: one container's cgroup in every hierarchy of the host.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};
use crate::files::{self, PROCS};
use crate::mountinfo::{self, CgroupMounts, SYSTEMD_HIERARCHY};
use crate::path::{place, resolve_location};
use crate::{v1, v2, CgroupMode, CgroupSetup, SystemView};

/// How long `remove` keeps retrying `rmdir` on `EBUSY`, in total.
const REMOVE_DEADLINE: Duration = Duration::from_secs(1);
/// How long `freeze` and `thaw` wait for the kernel to reach the state.
pub(crate) const FREEZE_DEADLINE: Duration = Duration::from_secs(2);

/// The container's directory in one cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct V1Cgroup {
    /// Controllers of the hierarchy (`cpu`, `cpuacct`), or `name=systemd`.
    pub(crate) controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub(crate) mount_point: PathBuf,
    /// The container's directory.
    pub(crate) path: PathBuf,
}

/// The container's directory in the cgroup2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnifiedCgroup {
    /// Where cgroup2 is mounted.
    pub(crate) mount_point: PathBuf,
    /// The container's directory.
    pub(crate) path: PathBuf,
    /// Controllers the cgroup2 root offers (its `cgroup.controllers`).
    pub(crate) controllers: Vec<String>,
}

/// Where a controller's files are for this container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// A cgroup v1 directory.
    V1(&'a Path),
    /// A cgroup v2 directory.
    V2(&'a Path),
}

/// One container's cgroup, in every hierarchy of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    pub(crate) mode: CgroupMode,
    pub(crate) v1: Vec<V1Cgroup>,
    pub(crate) unified: Option<UnifiedCgroup>,
    /// The [`SystemView::root`] the manager was built against.
    pub(crate) sys_root: PathBuf,
}

/// Decides the mode from the mounted hierarchies.
pub(crate) fn detect_mode(mounts: &CgroupMounts) -> Result<CgroupMode> {
    match (mounts.has_v1_controllers(), mounts.v2.is_some()) {
        (true, false) => Ok(CgroupMode::Legacy),
        (true, true) => Ok(CgroupMode::Hybrid),
        (false, true) => Ok(CgroupMode::Unified),
        (false, false) => Err(CgroupError::NoCgroupMounts),
    }
}

/// The controllers listed in `dir/cgroup.controllers`; empty if it cannot be read.
pub(crate) fn read_controllers(dir: &Path) -> Vec<String> {
    files::read(dir, "cgroup.controllers")
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Manager {
    /// Finds the host's hierarchies and decides where the container's cgroup goes.
    /// Creates nothing.
    pub fn new(setup: &CgroupSetup) -> Result<Manager> {
        Self::with_system(setup, SystemView::host()?)
    }

    /// Like [`Manager::new`], against the host described by `sys`.
    pub fn with_system(setup: &CgroupSetup, sys: SystemView) -> Result<Manager> {
        let mounts = mountinfo::find_cgroup_mounts(&mountinfo::parse_mountinfo(&sys.mountinfo)?);
        let own = mountinfo::parse_proc_cgroup(&sys.proc_self_cgroup)?;
        let mode = detect_mode(&mounts)?;
        let systemd_running = sys.host_path(Path::new("/run/systemd/system")).is_dir();
        let location = resolve_location(
            setup.cgroups_path,
            setup.container_id,
            setup.systemd,
            systemd_running,
        )?;

        let v1 = if mode == CgroupMode::Unified {
            Vec::new()
        } else {
            mounts
                .v1
                .iter()
                .map(|m| {
                    let mount_point = sys.host_path(&m.mount_point);
                    let path = place(
                        &location,
                        &mount_point,
                        &m.root,
                        own.v1_path(&m.controllers),
                    );
                    V1Cgroup {
                        controllers: m.controllers.clone(),
                        mount_point,
                        path,
                    }
                })
                .collect()
        };
        let unified = match (&mounts.v2, mode) {
            (Some(v2), CgroupMode::Hybrid | CgroupMode::Unified) => {
                let mount_point = sys.host_path(&v2.mount_point);
                let path = place(&location, &mount_point, &v2.root, own.unified.as_deref());
                Some(UnifiedCgroup {
                    controllers: read_controllers(&mount_point),
                    mount_point,
                    path,
                })
            }
            _ => None,
        };
        Ok(Manager {
            mode,
            v1,
            unified,
            sys_root: sys.root,
        })
    }

    /// How the host's cgroups are laid out.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The container's directory for a controller: the v1 hierarchy carrying it (also
    /// `name=systemd`), else the cgroup2 directory if cgroup2 offers it.
    pub fn path_for(&self, controller: &str) -> Option<PathBuf> {
        self.v1_dir(controller)
            .or_else(|| self.v2_dir(controller))
            .map(Path::to_path_buf)
    }

    /// The container's directory in the cgroup2 hierarchy (hybrid and unified modes).
    pub fn unified_path(&self) -> Option<PathBuf> {
        self.unified.as_ref().map(|u| u.path.clone())
    }

    /// Every directory the manager creates and removes: one per v1 hierarchy, plus the
    /// cgroup2 one.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.v1
            .iter()
            .map(|h| h.path.clone())
            .chain(self.unified_path())
            .collect()
    }

    pub(crate) fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.path.as_path())
    }

    pub(crate) fn v2_dir(&self, controller: &str) -> Option<&Path> {
        self.unified
            .as_ref()
            .filter(|u| u.controllers.iter().any(|c| c == controller))
            .map(|u| u.path.as_path())
    }

    /// Where the files of a controller go: v1 first (legacy and hybrid), else v2.
    pub(crate) fn target(&self, v1_name: &str, v2_name: Option<&str>) -> Option<Target<'_>> {
        if let Some(dir) = self.v1_dir(v1_name) {
            return Some(Target::V1(dir));
        }
        v2_name.and_then(|name| self.v2_dir(name)).map(Target::V2)
    }

    /// Like [`Manager::target`], failing with the spec field (`memory.limit`) and the
    /// controller's name.
    pub(crate) fn require(
        &self,
        field: &str,
        v1_name: &str,
        v2_name: Option<&str>,
    ) -> Result<Target<'_>> {
        self.target(v1_name, v2_name)
            .ok_or_else(|| CgroupError::ControllerUnavailable {
                what: format!("linux.resources.{field}"),
                controller: match (self.mode, v2_name) {
                    (CgroupMode::Unified, Some(name)) => name.to_string(),
                    _ => v1_name.to_string(),
                },
            })
    }

    /// The host path `path` (absolute) under the root the manager was built against.
    pub(crate) fn host_path(&self, path: &str) -> PathBuf {
        self.sys_root.join(path.trim_start_matches('/'))
    }

    /// Creates the container's directory in every hierarchy. On v1, a new `cpuset`
    /// cgroup gets `cpuset.cpus` and `cpuset.mems` copied from its parent (the kernel
    /// refuses tasks in a cpuset without them). On cgroup2, the controllers the root
    /// offers are enabled in `cgroup.subtree_control` of every ancestor; a controller
    /// that cannot be enabled there is left out here and reported by
    /// [`Manager::apply_resources`] if a resource needs it.
    pub fn create(&self) -> Result<()> {
        for hierarchy in &self.v1 {
            files::create_dir_all(&hierarchy.path)?;
            if hierarchy.controllers.iter().any(|c| c == "cpuset") {
                v1::copy_cpuset_from_parents(&hierarchy.mount_point, &hierarchy.path)?;
            }
        }
        if let Some(unified) = &self.unified {
            files::create_dir_all(&unified.path)?;
            v2::enable_controllers(&unified.mount_point, &unified.path, &unified.controllers)?;
        }
        Ok(())
    }

    /// Checks `resources` (see [`Manager::validate`]) and writes them.
    pub fn apply_resources(&self, resources: &LinuxResources) -> Result<()> {
        self.validate(resources)?;
        self.write_resources(resources)
    }

    /// Moves `pid` into the container's cgroup in every hierarchy, `name=systemd` and
    /// (in hybrid mode) cgroup2 included.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        for dir in self.cgroup_dirs() {
            files::write(&dir, PROCS, &value)?;
        }
        Ok(())
    }

    /// Moves the calling process into the container's cgroup by itself, the cheap way.
    ///
    /// In each v1 hierarchy it writes `0` to `tasks`: a thread moving itself needs no
    /// threadgroup lock, whereas writing a pid to `cgroup.procs` takes the kernel's
    /// threadgroup rwsem for writing and waits for an RCU grace period (5-10 ms here). The
    /// caller must be single-threaded, so that moving its one thread moves the process.
    /// `in_unified`: the caller was created in the cgroup2 directory already
    /// (clone3 with CLONE_INTO_CGROUP); otherwise it joins it through `cgroup.procs`.
    pub fn enter_self(&self, in_unified: bool) -> Result<()> {
        for file in self.self_entry_files(in_unified) {
            let dir = file.parent().unwrap_or(Path::new("/"));
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(PROCS);
            files::write(dir, name, "0")?;
        }
        Ok(())
    }

    /// The files [`Manager::enter_self`] writes `0` to: `tasks` in each v1 directory, and
    /// `cgroup.procs` in the cgroup2 directory unless `in_unified`. A process that must
    /// enter later from somewhere the host paths are not visible (inside the container's
    /// mount namespace) opens these first and writes `0` to the open files.
    ///
    /// The freezer comes last: a process joining a frozen cgroup stops there, and must
    /// already be in every other hierarchy by then.
    pub fn self_entry_files(&self, in_unified: bool) -> Vec<PathBuf> {
        let is_freezer = |h: &&V1Cgroup| h.controllers.iter().any(|c| c == "freezer");
        let mut out: Vec<PathBuf> = self
            .v1
            .iter()
            .filter(|h| !is_freezer(h))
            .map(|h| h.path.join("tasks"))
            .collect();
        if !in_unified {
            if let Some(u) = &self.unified {
                out.push(u.path.join(PROCS));
            }
        }
        out.extend(
            self.v1
                .iter()
                .filter(is_freezer)
                .map(|h| h.path.join("tasks")),
        );
        out
    }

    /// The directory whose process list is authoritative.
    pub(crate) fn procs_dir(&self) -> Option<&Path> {
        if self.mode == CgroupMode::Unified {
            return self.unified.as_ref().map(|u| u.path.as_path());
        }
        [
            "pids",
            "freezer",
            "memory",
            "cpu",
            "devices",
            SYSTEMD_HIERARCHY,
        ]
        .iter()
        .find_map(|c| self.v1_dir(c))
        .or_else(|| self.v1.first().map(|h| h.path.as_path()))
        .or_else(|| self.unified.as_ref().map(|u| u.path.as_path()))
    }

    /// Every process in the container's cgroup and in the cgroups below it, sorted.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self.procs_dir() {
            Some(dir) => files::pids_recursive(dir),
            None => Err(CgroupError::NoCgroupMounts),
        }
    }

    /// Where freezing happens: the v1 freezer if mounted, else cgroup2's `cgroup.freeze`.
    fn freezer(&self) -> Result<Target<'_>> {
        if let Some(dir) = self.v1_dir("freezer") {
            return Ok(Target::V1(dir));
        }
        match &self.unified {
            Some(unified) => Ok(Target::V2(&unified.path)),
            None => Err(CgroupError::ControllerUnavailable {
                what: "pausing a container".to_string(),
                controller: "freezer".to_string(),
            }),
        }
    }

    /// Freezes every process of the container and waits until the kernel reports the
    /// cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        match self.freezer()? {
            Target::V1(dir) => v1::set_frozen(dir, true, Instant::now() + FREEZE_DEADLINE),
            Target::V2(dir) => v2::set_frozen(dir, true, Instant::now() + FREEZE_DEADLINE),
        }
    }

    /// Thaws the container.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer()? {
            Target::V1(dir) => v1::set_frozen(dir, false, Instant::now() + FREEZE_DEADLINE),
            Target::V2(dir) => v2::set_frozen(dir, false, Instant::now() + FREEZE_DEADLINE),
        }
    }

    /// Whether the container is frozen (not merely freezing).
    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer()? {
            Target::V1(dir) => v1::is_frozen(dir),
            Target::V2(dir) => v2::is_frozen(dir),
        }
    }

    /// Removes the container's cgroup and every cgroup below it from every hierarchy,
    /// deepest first, retrying `EBUSY` for up to about a second (processes that were
    /// just killed take a moment to leave). Directories already gone are fine. Every
    /// hierarchy is tried; the first error is returned.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + REMOVE_DEADLINE;
        let mut first_error = None;
        for dir in self.cgroup_dirs() {
            if let Err(e) = files::remove_tree(&dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Polls `check` until it returns true or `deadline` passes, sleeping a little longer
/// each time. Returns the last answer.
pub(crate) fn wait_until(
    deadline: Instant,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let mut pause = Duration::from_millis(1);
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
