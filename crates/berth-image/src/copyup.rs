//! Copy-up: a fresh anonymous volume starts with what the image holds at its path, with the
//! same owner, mode, times and kept xattrs, as podman and docker do. A `VOLUME /var/lib/db`
//! whose directory the image gives to the `db` user must stay writable by that user.
//!
//! The image is hostile. The volume path is opened with `openat2(RESOLVE_IN_ROOT)` from
//! the container's root, so a link on the way resolves inside it; below it every entry is
//! reached from its directory's descriptor and never through a link (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`): symlinks are copied as links, not followed. Sockets are left out;
//! depth is bounded. The destination is a directory Berth has just made, so nothing in it
//! can redirect a write.

use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

pub use berth_fs::{CopyStats as CopyUpStats, MAX_DEPTH};

/// Why a volume could not be filled from the image.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: cannot copy {entry} from the image: {cause}")]
pub struct CopyUpError {
    /// The volume's path in the container.
    pub volume: String,
    /// The entry, as a path in the container.
    pub entry: String,
    /// What went wrong.
    pub cause: String,
}

/// Fills `dest`, an empty directory, with what `rootfs` holds at `volume` (a path in the
/// container), and gives `dest` that directory's owner, mode and times. Nothing to copy
/// (the image has no such path) is not an error; a path that is not a directory is.
pub fn copy_up(rootfs: &Path, volume: &str, dest: &Path) -> Result<CopyUpStats, CopyUpError> {
    let fail = |entry: &str, cause: String| CopyUpError {
        volume: volume.to_string(),
        entry: entry.to_string(),
        cause,
    };
    let rel = volume.trim_start_matches('/');
    if rel.is_empty() {
        return Err(fail("/", "a volume cannot be the root".into()));
    }
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "/",
            format!("open the root {}: {}", rootfs.display(), e.desc()),
        )
    })?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let src = match openat2(&root, rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(CopyUpStats::default()),
        Err(Errno::ENOTDIR) => {
            return Err(fail(volume, "it is not a directory in the image".into()))
        }
        Err(e) => return Err(fail(volume, e.desc().to_string())),
    };
    let dst = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(volume, format!("open {}: {}", dest.display(), e.desc())))?;
    berth_fs::copy_tree(&src, &dst, Path::new(volume))
        .map_err(|e| fail(&e.entry.display().to_string(), e.cause))
}

#[cfg(test)]
mod tests;
