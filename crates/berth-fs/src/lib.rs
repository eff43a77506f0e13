//! File-system helpers for trees Berth does not trust, shared by the runtime (libberth) and
//! the image store (berth-image): a container's rootfs, image layers, volumes. Everything
//! works from directory descriptors and never follows a link it did not mean to.
//!
//! - [`copy_tree`]: a whole tree, links as links, attributes kept (volume copy-up,
//!   tmpcopyup mounts);
//! - [`reopen_dir`], [`list_dir`]: walking by descriptor;
//! - [`reopen_regular`]: reading a file only once it is known to be a regular one;
//! - [`xattr_kept`], [`kept_xattrs`], [`set_xattr`]: which extended attributes of image
//!   content travel with it.

mod copy;

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

pub use copy::{copy_tree, CopyError, CopyStats, MAX_DEPTH};

/// Opens `leaf` of `parent` as a directory, never through a link.
pub fn reopen_dir<P: ?Sized + nix::NixPath>(parent: &OwnedFd, leaf: &P) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        parent,
        leaf,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory, without `.` and `..`.
pub fn list_dir(dirfd: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let dup = dirfd.try_clone().map_err(|_| Errno::EMFILE)?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(out)
}

/// Whether an extended attribute of image content is kept: file capabilities, `user.*` and
/// `trusted.*` except overlayfs's own. SELinux labels and other `security.*` names are the
/// host's to set.
pub fn xattr_kept(name: &[u8]) -> bool {
    name == b"security.capability"
        || name.starts_with(b"user.")
        || (name.starts_with(b"trusted.") && !name.starts_with(b"trusted.overlay."))
}

/// Sets one extended attribute on an open file or directory.
pub fn set_xattr<F: AsFd>(f: &F, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: fsetxattr reads the NUL-terminated name and `value.len()` bytes of `value`.
    let r = unsafe {
        libc::fsetxattr(
            f.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kept extended attributes of an open file or directory.
pub fn kept_xattrs<F: AsFd>(f: &F) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let fd = f.as_fd().as_raw_fd();
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: flistxattr writes at most `names.len()` bytes into `names`.
        let r = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !xattr_kept(name) {
            continue;
        }
        let Ok(key) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: fgetxattr reads the NUL-terminated name and writes at most
            // `value.len()` bytes into `value`.
            let r = unsafe {
                libc::fgetxattr(fd, key.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if r >= 0 {
                value.truncate(r as usize);
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if value.len() < 1 << 20 => value.resize(value.len() * 4, 0),
                _ => return Err(e),
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Opens for reading the regular file that `fd` (an `O_PATH` descriptor, which opened
/// nothing) names: the same inode, through `/proc/self/fd`, checked to be the same regular
/// file afterwards. A fifo or device node from an image is thus never opened by the host:
/// the caller fstat()s the `O_PATH` descriptor first, and this refuses anything else too.
pub fn reopen_regular(fd: &OwnedFd) -> io::Result<File> {
    let regular = |st: &nix::sys::stat::FileStat| st.st_mode & libc::S_IFMT == libc::S_IFREG;
    let before = nix::sys::stat::fstat(fd)?;
    if !regular(&before) {
        return Err(io::Error::other("not a regular file"));
    }
    let f = File::from(nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?);
    let after = nix::sys::stat::fstat(&f)?;
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) || !regular(&after) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(f)
}
