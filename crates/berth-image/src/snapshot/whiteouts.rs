//! Whiteouts that hide nothing. A layer may white out a name no layer below it has (real
//! images do: a file made and deleted in one build step, a `rm -f` of something absent).
//! Overlayfs filters whiteouts only when it merges a directory from several layers; in a
//! directory that only one layer holds, readdir lists the 0/0 character device as an entry
//! that stat then cannot find. containerd and podman show that phantom; Berth drops such a
//! whiteout before it commits the layer. Layers are keyed by chain ID, so the layers below
//! a layer are known and committed by then: a whiteout stays only if the name exists in the
//! overlay view of those lower layers.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, major, minor, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn open_sub(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn is_whiteout(mode: u32, rdev: u64) -> bool {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
        && major(rdev) == 0
        && minor(rdev) == 0
}

/// Whether the directory is marked opaque (`trusted.overlay.opaque=y`).
fn is_opaque(dir: &OwnedFd) -> bool {
    let mut v = [0u8; 2];
    // SAFETY: fgetxattr reads the NUL-terminated name and writes at most `v.len()` bytes
    // into `v`, a buffer this function owns; `dir` is an open descriptor.
    let r = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    r == 1 && v[0] == b'y'
}

/// Whether `path` exists in the overlay view of `lowers` (layer directories, top first):
/// each layer is looked at in turn, never following a link; a whiteout hides the name (or
/// a directory above it) from the layers below, a non-directory ends the path, and an
/// opaque directory hides what the layers below have inside it.
pub(crate) fn exists_below(path: &[OsString], lowers: &[PathBuf]) -> io::Result<bool> {
    let Some((leaf, dirs)) = path.split_last() else {
        return Ok(true);
    };
    for lower in lowers {
        let mut dir = open_dir(lower)?;
        let mut opaque = false;
        let mut descended = true;
        for d in dirs {
            match fstatat(&dir, d.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => {
                    descended = false;
                    break;
                }
                Err(e) => return Err(e.into()),
                Ok(st) if is_whiteout(st.st_mode, st.st_rdev) => return Ok(false),
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return Ok(false),
                Ok(_) => {
                    dir = open_sub(&dir, d.as_os_str())?;
                    opaque |= is_opaque(&dir);
                }
            }
        }
        if descended {
            match fstatat(&dir, leaf.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
                Ok(st) => return Ok(!is_whiteout(st.st_mode, st.st_rdev)),
            }
        }
        if opaque {
            // An opaque directory on the way: the layers below are hidden there.
            return Ok(false);
        }
    }
    Ok(false)
}

/// Removes from `layer` (a layer directory about to be committed) each whiteout of
/// `whiteouts` (paths below it, as the unpacker made them) whose name no layer of
/// `lowers` (top first) has. Returns how many were removed.
pub(crate) fn drop_unneeded(
    layer: &Path,
    whiteouts: &[PathBuf],
    lowers: &[PathBuf],
) -> io::Result<usize> {
    let root = nix::fcntl::open(
        layer,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut removed = 0;
    for w in whiteouts {
        let comps = components(w);
        let Some((leaf, dirs)) = comps.split_last() else {
            continue;
        };
        // The parent as the unpacker found it: resolved inside the layer.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let parent_path: PathBuf = if dirs.is_empty() {
            PathBuf::from(".")
        } else {
            dirs.iter().collect()
        };
        let parent = match openat2(&root, &parent_path, how) {
            Ok(p) => p,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
            Err(e) => return Err(e.into()),
        };
        match fstatat(&parent, leaf.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            // Still the whiteout (a later entry of the layer may have replaced it).
            Ok(st) if is_whiteout(st.st_mode, st.st_rdev) => {}
            Ok(_) | Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        }
        if !exists_below(&comps, lowers)? {
            unlinkat(&parent, leaf.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            removed += 1;
        }
    }
    Ok(removed)
}
