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

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use crate::fsutil::{list_dir, reopen_dir, set_xattr, xattr_kept};

/// Directories nested deeper than this below a volume path are refused.
pub const MAX_DEPTH: usize = 256;

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

/// What a copy-up copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyUpStats {
    /// Entries made below the volume (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Sockets, which are not copied.
    pub skipped: u64,
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
    let mut c = Copier {
        volume,
        dst_root: dst.try_clone().map_err(|e| fail(volume, e.to_string()))?,
        links: HashMap::new(),
        stats: CopyUpStats::default(),
    };
    let at = PathBuf::from(volume);
    c.dir(&src, &dst, &at, Path::new(""), 0)?;
    let st = fstat(&src).map_err(|e| c.fail(&at, "stat", e))?;
    c.attrs(&at, &src, &dst, &st)?;
    Ok(c.stats)
}

struct Copier<'a> {
    volume: &'a str,
    /// The destination's root, for hardlinks (linkat by a path below it).
    dst_root: OwnedFd,
    /// (device, inode) of a file with several links → where its first copy is, relative
    /// to `dst_root`.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyUpStats,
}

impl Copier<'_> {
    fn fail(&self, at: &Path, op: &str, e: impl std::fmt::Display) -> CopyUpError {
        CopyUpError {
            volume: self.volume.to_string(),
            entry: at.display().to_string(),
            cause: format!("{op}: {e}"),
        }
    }

    /// Copies what `src` holds into `dst`. `at` names `src` in the container, `rel` is
    /// its place below the volume.
    fn dir(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        at: &Path,
        rel: &Path,
        depth: usize,
    ) -> Result<(), CopyUpError> {
        if depth >= MAX_DEPTH {
            return Err(self.fail(
                at,
                "copy",
                format!("directories nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let mut names = list_dir(src).map_err(|e| self.fail(at, "list", e.desc()))?;
        names.sort();
        for name in names {
            self.entry(src, dst, &at.join(&name), &rel.join(&name), &name, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        at: &Path,
        rel: &Path,
        name: &OsString,
        depth: usize,
    ) -> Result<(), CopyUpError> {
        let name = name.as_os_str();
        let st = fstatat(src, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(at, "stat", e.desc()))?;
        let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {
                mkdirat(dst, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| self.fail(at, "make the directory", e.desc()))?;
                self.stats.entries += 1;
                let s = reopen_dir(src, name).map_err(|e| self.fail(at, "open", e.desc()))?;
                let d =
                    reopen_dir(dst, name).map_err(|e| self.fail(at, "open the copy", e.desc()))?;
                self.dir(&s, &d, at, rel, depth + 1)?;
                // Owner and mode after the contents, so a read-only directory is filled
                // first; times last, as filling it changed them.
                self.attrs(at, &s, &d, &st)
            }
            SFlag::S_IFREG => self.file(src, dst, at, rel, name, &st),
            SFlag::S_IFLNK => {
                let target =
                    readlinkat(src, name).map_err(|e| self.fail(at, "read the link", e.desc()))?;
                symlinkat(target.as_os_str(), dst, name)
                    .map_err(|e| self.fail(at, "make the link", e.desc()))?;
                self.stats.entries += 1;
                self.owner_times_at(at, dst, name, &st)
            }
            SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK => {
                let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
                mknodat(dst, name, kind, perm, st.st_rdev)
                    .map_err(|e| self.fail(at, "make the node", e.desc()))?;
                self.stats.entries += 1;
                self.owner_times_at(at, dst, name, &st)?;
                // After chown, which may clear setuid/setgid bits.
                fchmodat(dst, name, perm, FchmodatFlags::FollowSymlink)
                    .map_err(|e| self.fail(at, "set its mode", e.desc()))
            }
            _ => {
                // A socket is bound by a process; a copy would be a dead name.
                self.stats.skipped += 1;
                Ok(())
            }
        }
    }

    fn file(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        at: &Path,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<(), CopyUpError> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                linkat(&self.dst_root, first.as_path(), dst, name, AtFlags::empty())
                    .map_err(|e| self.fail(at, "link", e.desc()))?;
                self.stats.entries += 1;
                return Ok(());
            }
        }
        // O_PATH opens nothing; only the regular file stat saw is then opened for reading,
        // so an entry swapped for a fifo or device node is never opened by the host.
        let path_fd = openat(
            src,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail(at, "open", e.desc()))?;
        let now = fstat(&path_fd).map_err(|e| self.fail(at, "stat", e.desc()))?;
        if now.st_ino != st.st_ino || now.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(self.fail(at, "open", "the entry changed while it was copied"));
        }
        let input =
            crate::fsutil::reopen_regular(&path_fd).map_err(|e| self.fail(at, "open", e))?;
        let output = openat(
            dst,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.fail(at, "create the copy", e.desc()))?;
        let (mut input, mut output) = (input, File::from(output));
        // std's copy uses copy_file_range (a reflink where the file system can) and falls
        // back to read/write.
        let n = io::copy(&mut input, &mut output).map_err(|e| self.fail(at, "copy", e))?;
        self.stats.bytes += n;
        self.stats.entries += 1;
        self.attrs(at, &input, &output, st)?;
        if st.st_nlink > 1 {
            self.links.insert(key, rel.to_path_buf());
        }
        Ok(())
    }

    /// Owner, then mode (chown clears setuid bits and file capabilities), then kept xattrs,
    /// then times, from `src` onto `dst`.
    fn attrs<S: AsFd, D: AsFd>(
        &self,
        at: &Path,
        src: &S,
        dst: &D,
        st: &FileStat,
    ) -> Result<(), CopyUpError> {
        fchown(
            dst.as_fd(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| self.fail(at, "set its owner", e.desc()))?;
        fchmod(dst.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(|e| self.fail(at, "set its mode", e.desc()))?;
        for (k, v) in xattrs(src).map_err(|e| self.fail(at, "read its xattrs", e))? {
            set_xattr(dst, &k, &v).map_err(|e| self.fail(at, "set an xattr", e))?;
        }
        futimens(
            dst.as_fd(),
            &TimeSpec::new(st.st_atime, st.st_atime_nsec),
            &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        )
        .map_err(|e| self.fail(at, "set its times", e.desc()))
    }

    /// Owner and times of a link or node, by name (neither can be opened safely).
    fn owner_times_at(
        &self,
        at: &Path,
        dst: &OwnedFd,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<(), CopyUpError> {
        fchownat(
            dst,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail(at, "set its owner", e.desc()))?;
        utimensat(
            dst,
            name,
            &TimeSpec::new(st.st_atime, st.st_atime_nsec),
            &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.fail(at, "set its times", e.desc()))
    }
}

/// The kept extended attributes of an open file or directory.
fn xattrs<F: AsFd>(f: &F) -> io::Result<Vec<(CString, Vec<u8>)>> {
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

#[cfg(test)]
mod tests;
