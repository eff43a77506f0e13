//! cgroup management for the Berth container runtime: cgroup v1 (legacy), cgroup v2
//! (unified) and the hybrid layout where v1 controllers sit beside a cgroup2 mount.
//!
//! The [`Manager`] finds the hierarchies in `/proc/self/mountinfo`, decides where the
//! container's cgroup goes (see [`path`] for the rules), checks `linux.resources`
//! before anything is created ([`Manager::validate`]), creates the directories,
//! writes the limits, moves processes in, freezes and thaws them, reads their resource
//! usage ([`Manager::stats`]), reports OOM kills ([`Manager::watch_oom`]), and removes the
//! cgroup again. It is `Serialize`/`Deserialize`, so a runtime can store it in its
//! state file and rebuild it in a later process.
//!
//! See `docs/cgroups.md` in the repository for modes, path rules and conversions.

mod apply;
mod bpf;
pub mod devices;
mod error;
mod files;
mod manager;
pub mod mountinfo;
mod oom;
pub mod path;
mod signal;
pub mod stats;
mod v1;
mod v2;
mod validate;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use devices::default_allowed_devices;
pub use error::CgroupError;
pub use manager::Manager;
pub use oom::{OomNotice, OomWatcher};
pub use stats::Stats;
pub use v2::{cpu_shares_to_weight, io_weight_from_blkio};

use crate::error::Result;

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v1 only: one hierarchy per controller (or group of co-mounted controllers).
    Legacy,
    /// cgroup v1 controllers plus a cgroup2 mount holding whatever controllers v1 does
    /// not use.
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

impl CgroupMode {
    /// The mode in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Legacy => "cgroup v1",
            Self::Hybrid => "hybrid cgroup v1/v2",
            Self::Unified => "cgroup v2",
        }
    }
}

/// What the runtime knows about the container's cgroup before creating it.
#[derive(Debug, Clone, Copy)]
pub struct CgroupSetup<'a> {
    /// `linux.cgroupsPath` of the spec.
    pub cgroups_path: Option<&'a Path>,
    /// The container id; names the cgroup when `cgroups_path` is absent.
    pub container_id: &'a str,
    /// `--systemd-cgroup`: `cgroups_path` is `slice:prefix:name`.
    pub systemd: bool,
}

/// The host as the manager sees it: the contents of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`, and a root directory under which every absolute path they
/// name (mount points, `/run/systemd/system`, `/sys/kernel/mm/hugepages`) is looked up.
/// Tests point `root` at a temporary directory holding a fake tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemView {
    /// Prefix for every absolute host path; `/` for the real host.
    pub root: PathBuf,
    /// Text of `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// Text of `/proc/self/cgroup`.
    pub proc_self_cgroup: String,
}

impl SystemView {
    /// The real host, as seen by this process.
    pub fn host() -> Result<Self> {
        let read = |path: &str| {
            fs::read_to_string(path).map_err(|source| CgroupError::ReadHostFile {
                path: PathBuf::from(path),
                source,
            })
        };
        Ok(Self {
            root: PathBuf::from("/"),
            mountinfo: read("/proc/self/mountinfo")?,
            proc_self_cgroup: read("/proc/self/cgroup")?,
        })
    }

    /// `path` (absolute, as the host names it) under [`SystemView::root`].
    pub fn host_path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The controllers a host offers, for `berth features`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controllers {
    /// How the host's cgroups are laid out.
    pub mode: CgroupMode,
    /// Controllers mounted as cgroup v1 hierarchies (named hierarchies left out).
    pub v1: Vec<String>,
    /// Controllers listed in the cgroup2 root's `cgroup.controllers`.
    pub v2: Vec<String>,
}

/// Lists the controllers of the host described by `sys`.
pub fn available_controllers(sys: &SystemView) -> Result<Controllers> {
    let mounts = mountinfo::find_cgroup_mounts(&mountinfo::parse_mountinfo(&sys.mountinfo)?);
    let mode = manager::detect_mode(&mounts)?;
    let mut v1: Vec<String> = mounts
        .v1
        .iter()
        .flat_map(|m| m.controllers.iter())
        .filter(|c| !c.starts_with("name="))
        .cloned()
        .collect();
    v1.sort();
    let v2 = match &mounts.v2 {
        Some(v2) => manager::read_controllers(&sys.host_path(&v2.mount_point)),
        None => Vec::new(),
    };
    Ok(Controllers { mode, v1, v2 })
}
