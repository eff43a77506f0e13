//! Small file-system helpers the stores share.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Replaces `path` with `data` so that a crash leaves either the old or the new content:
/// a fresh temporary file of an unguessable name (`O_CREAT|O_EXCL|O_NOFOLLOW`), synced,
/// renamed over `path`, then the directory synced. The directory is opened once and
/// everything after is relative to that descriptor, so a directory someone else can write
/// cannot redirect any of it (see [`write_atomic_in`]).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    write_atomic_in(&open_dir(dir)?, name, data, mode)
}

/// `path`'s directory (`.` for a bare name) and file name; an error for a path that names
/// no file (`/`, `..`).
pub fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// [`write_atomic`] into an open directory.
pub fn write_atomic_in(dir: &OwnedFd, name: &OsStr, data: &[u8], mode: u32) -> io::Result<()> {
    let (mut f, tmp) = create_temp_file(dir, name, mode)?;
    let result = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name)?;
        nix::unistd::fsync(dir).map_err(io::Error::from)
    })();
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// A name no one can guess beforehand: `.<name>.tmp-<32 random hex digits>`.
fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    let mut out = OsString::from(".");
    out.push(name);
    out.push(".tmp-");
    out.push(b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    Ok(out)
}

/// Opens a directory the caller names (following the links in its path, as the caller
/// asked), once: what is done in it afterwards goes through this descriptor, so nobody can
/// swap a component of the path midway.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens `path` as a directory, making what is missing of it (mode `mode`) first: each
/// missing component is made with mkdirat in its parent's descriptor and opened from there
/// without following a link, so one planted meanwhile is refused rather than followed.
pub fn open_or_make_dir(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    match open_dir(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let (parent, leaf) = split(path)?;
    let parent = open_or_make_dir(parent, mode)?;
    match mkdirat(&parent, leaf, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    reopen_dir(&parent, leaf).map_err(io::Error::from)
}

/// Creates a file of an unguessable name beside `name` in `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW`:
/// nothing that was there, a link least of all, is opened). Returns it and its name.
pub fn create_temp_file(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<(File, OsString)> {
    let tmp = temp_name(name)?;
    let fd = nix::fcntl::openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    Ok((File::from(fd), tmp))
}

/// Creates a directory of an unguessable name beside `name` in `dir`, mode 0700, and
/// opens it without following a link; it must then be a directory this process's user owns
/// (so nobody else made it, or can write into it). Returns it and its name.
pub fn create_temp_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<(OwnedFd, OsString)> {
    let tmp = temp_name(name)?;
    mkdirat(dir, tmp.as_os_str(), Mode::from_bits_truncate(0o700))?;
    let fd = reopen_dir(dir, tmp.as_os_str())?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} was replaced by someone else's directory",
            tmp.to_string_lossy()
        )));
    }
    // Whatever the umask made of it.
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700))?;
    Ok((fd, tmp))
}

/// Renames `from` to `to`, both in `dir`, failing with `AlreadyExists` rather than
/// replacing anything at `to` (renameat2 `RENAME_NOREPLACE`).
pub fn rename_noreplace(dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    nix::fcntl::renameat2(
        dir,
        from,
        dir,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io::Error::from)
}

/// Removes parent/leaf and, for a directory, everything in it; links are removed, never
/// followed.
pub fn remove_tree(parent: &OwnedFd, leaf: &OsStr) -> nix::Result<()> {
    match unlinkat(parent, leaf, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let dir = reopen_dir(parent, leaf)?;
    for child in list_dir(&dir)? {
        remove_tree(&dir, &child)?;
    }
    match unlinkat(parent, leaf, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Seconds since the epoch, for records.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The helpers for hostile trees that the runtime uses too.
pub use berth_fs::{list_dir, reopen_dir, reopen_regular, set_xattr, xattr_kept};

#[cfg(test)]
mod tests;
