//! Small file-system helpers the stores share.

use std::ffi::{CStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Replaces `path` with `data` so that a crash leaves either the old or the new content: a
/// fresh temporary file (never through a link), synced, renamed over `path`, then the
/// directory synced.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Seconds since the epoch, for records.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
