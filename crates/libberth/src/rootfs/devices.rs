//! Device nodes in the container's /dev: the default set, linux.devices, and the usual links.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::resolve;
use crate::error::{Context, Error, Result};

/// A device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// /dev/null, zero, full, random, urandom and tty, as every runtime provides them.
pub fn defaults() -> Vec<Dev> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(n, major, minor)| Dev {
        path: PathBuf::from("/dev").join(n),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Result<Dev> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::Unsupported(format!(
                "linux.devices {}: type \"a\" is only valid in cgroup rules",
                d.path().display()
            )))
        }
    };
    Ok(Dev {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// The defaults (unless the spec names the same path) and the spec's devices.
pub fn create_all(root: BorrowedFd<'_>, spec_devs: &[LinuxDevice], userns: bool) -> Result<()> {
    let mut all: Vec<Dev> = Vec::new();
    for d in spec_devs {
        all.push(from_spec(d)?);
    }
    for d in defaults() {
        if !all.iter().any(|x| x.path == d.path) {
            all.push(d);
        }
    }
    for d in &all {
        create(root, d, userns)?;
    }
    Ok(())
}

fn create(root: BorrowedFd<'_>, d: &Dev, userns: bool) -> Result<()> {
    let rel = resolve::relative(&d.path);
    let name = rel.file_name().expect("device paths name a file");
    let dir = resolve::mkdir_all(
        root,
        rel.parent().unwrap_or(Path::new(".")),
        Mode::from_bits_truncate(0o755),
    )?;
    if !userns {
        match mknodat(
            dir.as_fd(),
            name,
            d.kind,
            Mode::from_bits_truncate(d.mode),
            makedev(d.major, d.minor),
        ) {
            Ok(()) => {
                fchmodat(
                    dir.as_fd(),
                    name,
                    Mode::from_bits_truncate(d.mode),
                    FchmodatFlags::NoFollowSymlink,
                )
                .or_else(|e| {
                    if e == Errno::EOPNOTSUPP {
                        fchmodat(
                            dir.as_fd(),
                            name,
                            Mode::from_bits_truncate(d.mode),
                            FchmodatFlags::FollowSymlink,
                        )
                    } else {
                        Err(e)
                    }
                })
                .ctx(|| format!("chmod device {}", d.path.display()))?;
                fchownat(
                    dir.as_fd(),
                    name,
                    Some(Uid::from_raw(d.uid)),
                    Some(Gid::from_raw(d.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ctx(|| format!("chown device {}", d.path.display()))?;
                return Ok(());
            }
            Err(Errno::EEXIST) => return check_existing(dir.as_fd(), name, d),
            Err(Errno::EPERM) => {}
            Err(e) => return Err(Error::sys(format!("mknod {}", d.path.display()), e)),
        }
    }
    // No mknod (user namespace): bind the host's node onto an empty file.
    let host = host_node(d);
    let target = resolve::ensure_file(root, &d.path)?;
    mount(
        Some(&host),
        &resolve::fd_path(target.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {} onto {}", host.display(), d.path.display()))
}

fn host_node(d: &Dev) -> PathBuf {
    d.path.clone()
}

/// /dev/fd, /dev/std{in,out,err} and /dev/ptmx → pts/ptmx.
pub fn symlinks(root: BorrowedFd<'_>) -> Result<()> {
    let dev = resolve::mkdir_all(root, Path::new("/dev"), Mode::from_bits_truncate(0o755))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        if name == "ptmx" {
            // A real node here would bypass the container's devpts instance.
            let _ =
                nix::unistd::unlinkat(dev.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::sys(format!("symlink /dev/{name}"), e)),
        }
    }
    let _ = OFlag::empty();
    Ok(())
}

/// A node the rootfs already has where a device goes (a /dev that is not a fresh tmpfs):
/// kept only if it is that very device, never a link or a file planted by the image, which
/// the runtime would otherwise use as the device (masking binds /dev/null).
fn check_existing(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, d: &Dev) -> Result<()> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ctx(|| format!("stat existing {}", d.path.display()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != d.kind || st.st_rdev != makedev(d.major, d.minor) {
        return Err(Error::Unsupported(format!(
            "the rootfs already has {} and it is not the device {}:{} (a link, a file or \
             another device planted by the image)",
            d.path.display(),
            d.major,
            d.minor
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set() {
        let d = defaults();
        assert_eq!(d.len(), 6);
        assert!(d
            .iter()
            .any(|x| x.path == Path::new("/dev/null") && x.major == 1 && x.minor == 3));
        assert!(d.iter().all(|x| x.mode == 0o666));
    }
}
