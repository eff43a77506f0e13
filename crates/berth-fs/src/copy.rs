//! Copying a directory tree that may be hostile, from one directory descriptor to another.
//!
//! Every entry is reached from its directory's descriptor and never through a link
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`): symlinks are copied as links, never followed; a
//! regular file is opened only after it was seen to be one (`O_PATH`, then reopened), so a
//! fifo or device swapped in is never opened; sockets are left out; depth is bounded.
//! Owners, modes, times and the kept extended attributes (see [`crate::xattr_kept`]) go
//! with each entry; hard links within the tree stay links.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use crate::{kept_xattrs, list_dir, reopen_dir, set_xattr};

/// Directories nested deeper than this below the copy's root are refused.
pub const MAX_DEPTH: usize = 256;

/// Why a tree could not be copied: the entry, and what failed on it.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy {}: {cause}", entry.display())]
pub struct CopyError {
    /// The entry, named as the caller named the source root (`shown` of [`copy_tree`]).
    pub entry: PathBuf,
    /// What went wrong.
    pub cause: String,
}

/// What a copy copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries made below the destination (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Sockets, which are not copied.
    pub skipped: u64,
}

/// Copies what the directory `src` holds into `dst`, an empty directory nobody else can
/// write, and gives `dst` the owner, mode, kept xattrs and times of `src`. Both are
/// descriptors opened `O_RDONLY | O_DIRECTORY`; `shown` names `src` in errors.
pub fn copy_tree(src: &OwnedFd, dst: &OwnedFd, shown: &Path) -> Result<CopyStats, CopyError> {
    let mut c = Copier {
        dst_root: dst.try_clone().map_err(|e| CopyError {
            entry: shown.to_path_buf(),
            cause: e.to_string(),
        })?,
        links: HashMap::new(),
        stats: CopyStats::default(),
    };
    c.dir(src, dst, shown, Path::new(""), 0)?;
    let st = fstat(src).map_err(|e| c.fail(shown, "stat", e))?;
    c.attrs(shown, src, dst, &st)?;
    Ok(c.stats)
}

struct Copier {
    /// The destination's root, for hardlinks (linkat by a path below it).
    dst_root: OwnedFd,
    /// (device, inode) of a file with several links → where its first copy is, relative
    /// to `dst_root`.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

impl Copier {
    fn fail(&self, at: &Path, op: &str, e: impl std::fmt::Display) -> CopyError {
        CopyError {
            entry: at.to_path_buf(),
            cause: format!("{op}: {e}"),
        }
    }

    /// Copies what `src` holds into `dst`. `at` names `src` in messages, `rel` is its
    /// place below the copy's root.
    fn dir(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        at: &Path,
        rel: &Path,
        depth: usize,
    ) -> Result<(), CopyError> {
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
    ) -> Result<(), CopyError> {
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
    ) -> Result<(), CopyError> {
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
        let input = crate::reopen_regular(&path_fd).map_err(|e| self.fail(at, "open", e))?;
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
    ) -> Result<(), CopyError> {
        fchown(
            dst.as_fd(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| self.fail(at, "set its owner", e.desc()))?;
        fchmod(dst.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(|e| self.fail(at, "set its mode", e.desc()))?;
        for (k, v) in kept_xattrs(src).map_err(|e| self.fail(at, "read its xattrs", e))? {
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
    ) -> Result<(), CopyError> {
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
