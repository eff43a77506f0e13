//! A container without a mount namespace of its own makes its mounts (proc, /dev, the
//! console...) in the host's, below its rootfs. `create` notes which mounts were there
//! before; `delete`, and a failed `create`, unmount every other one below the rootfs, so
//! nothing of the container stays mounted on the host.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use crate::error::{Context, Error, Result};

/// Mounts on and below `rootfs`, as (id, mount point). A mount that was there before create
/// (the rootfs itself may be one) is in the caller's `before` list.
fn below(rootfs: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let root = fs::canonicalize(rootfs).ctx(|| format!("resolve {}", rootfs.display()))?;
    let text =
        fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo".into())?;
    let entries = berth_cgroups::mountinfo::parse_mountinfo(&text)
        .map_err(|e| Error::Init(format!("parse /proc/self/mountinfo: {e}")))?;
    Ok(entries
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&root))
        .map(|m| (m.mount_id, m.mount_point))
        .collect())
}

/// The ids of the mounts on and below `rootfs` now.
pub fn mounts_below(rootfs: &Path) -> Result<Vec<u32>> {
    Ok(below(rootfs)?.into_iter().map(|(id, _)| id).collect())
}

/// Detaches every mount on or below `rootfs` that is not in `before`, the deepest first.
pub fn unmount_new_below(rootfs: &Path, before: &[u32]) -> Result<()> {
    let mut new: Vec<(u32, PathBuf)> = below(rootfs)?
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .collect();
    new.sort_by_key(|(_, p)| std::cmp::Reverse(p.components().count()));
    for (_, point) in new {
        match umount2(&point, MntFlags::MNT_DETACH) {
            // Gone with a parent detached before it.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("unmount {}", point.display()), e)),
        }
    }
    Ok(())
}
