//! Applying one image layer (a tar stream: plain, gzip or zstd) to a directory, treating
//! the layer as hostile.
//!
//! Every path is resolved inside the destination: the parent directory of each entry is
//! opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from a descriptor of the
//! destination, and the entry itself is made with `*at` calls on that parent that never
//! follow a final symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL` after an unlink).
//! So a symlink in the tree, from this layer or an earlier one, is followed *inside* the
//! destination, as the container will see it, and nothing outside is ever written. Entry
//! names are normalised lexically first: a leading `/` is dropped (an absolute name means
//! "from the root of the image", as docker and containerd read it), and a `..` that would
//! climb above the root is refused rather than clamped, as are names with a NUL byte. A
//! hardlink's target is resolved the same way and may not be a directory.
//!
//! Whiteouts are either converted for overlayfs (a 0/0 character device, the
//! `trusted.overlay.opaque` xattr) or applied (the named path, or an opaque directory's
//! content from earlier layers, is removed), see [`Whiteouts`].
//!
//! GNU long names and link targets are bounded at 64 KiB and PAX records at 1 MiB before the
//! tar crate reads them into memory (`tarbound.rs`).
//!
//! Extended attributes from PAX records: `security.capability`, `user.*` and `trusted.*` are
//! set (`trusted.overlay.*` never: those would steer overlayfs itself); others, such as
//! SELinux labels, are dropped. Symlinks get no xattrs.
//!
//! A layer that fails midway returns the error and leaves what it wrote; callers unpack into
//! a fresh directory and remove it on failure (the snapshotter does).

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, futimens, makedev, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::fsutil::{list_dir, remove_tree, reopen_dir, set_xattr, xattr_kept};
use crate::tarbound::{Bounded, HeaderTooLarge};

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// For an overlayfs layer directory: `.wh.NAME` becomes a 0/0 character device NAME and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// For a flat copy: `.wh.NAME` removes NAME (recursively) and `.wh..wh..opq` removes what
    /// earlier layers left in its directory, keeping what this layer adds there, whatever the
    /// order of the entries.
    Apply,
}

/// The default bound on what one layer may unpack to: generous (the largest real layers are
/// a few GiB), but a decompression bomb stops there instead of filling the disk.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Give entries the owner the tar records (true as root).
    pub preserve_owner: bool,
    /// The most bytes of file data the layer may write; an entry that would pass it is
    /// refused before any of its data is written.
    pub max_size: u64,
}

/// What an unpack found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed stream, to its end.
    pub diff_id: Digest,
    /// Bytes of the uncompressed stream.
    pub size: u64,
    /// The whiteouts made ([`Whiteouts::Overlay`]), as normalised paths below the
    /// destination (a later entry of the layer may have replaced one).
    pub whiteouts: Vec<PathBuf>,
}

/// Why a layer could not be applied; each names the layer and, where there is one, the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: entry {entry:?}: {cause}")]
    Refused {
        layer: String,
        entry: String,
        cause: String,
    },
    #[error("layer {layer}: entry {entry:?}: {op}: {source}")]
    Entry {
        layer: String,
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: read the tar stream: {source}")]
    Stream {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: {what}: {source}")]
    Dest {
        layer: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// A GNU long name or link target, or PAX records, claiming more than their bound;
    /// refused before they are read.
    #[error("layer {layer}: {what} of {size} bytes, over the {limit}-byte limit")]
    HeaderTooLarge {
        layer: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("layer {layer}: the uncompressed data hashes to {actual}, the image says {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: Digest,
        actual: Digest,
    },
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The stream decompressed, the compression told by its first bytes: gzip (every member),
/// zstd (every frame) or none.
pub fn decompressed<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(128 * 1024, reader);
    let head = r.fill_buf()?;
    if head.starts_with(GZIP_MAGIC) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Hashes and counts what passes through.
pub(crate) struct Hashing<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Hasher,
    pub(crate) size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Applies the layer read from `reader` to `dest` (which must exist). `layer` names it in
/// errors. With `expected_diff_id`, a stream hashing to anything else is an error (found
/// once the whole stream is read).
pub fn unpack_layer<R: Read>(
    layer: &str,
    reader: R,
    dest: &Path,
    opts: &UnpackOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<Unpacked, UnpackError> {
    let stream = |source| UnpackError::Stream {
        layer: layer.to_string(),
        source,
    };
    let plain = decompressed(reader).map_err(stream)?;
    let mut hashing = Hashing {
        inner: plain,
        hasher: Algorithm::Sha256.hasher(),
        size: 0,
    };
    let root = nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Dest {
        layer: layer.to_string(),
        what: format!("open {}", dest.display()),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        layer,
        root,
        opts,
        dirs: Vec::new(),
        added: HashSet::new(),
        opaque: Vec::new(),
        whiteouts: Vec::new(),
        written: 0,
        parent_cache: None,
    };
    {
        // Extension headers (long names, PAX) are bounded before the tar crate buffers them.
        let mut archive = tar::Archive::new(Bounded::new(&mut hashing));
        archive.set_ignore_zeros(false);
        let entries = archive.entries().map_err(stream)?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if HeaderTooLarge::find(&e).is_some() => {
                    return Err(header_too_large(layer, &e));
                }
                // Some writers (umoci among them) end the stream right after the last
                // entry's data, without its padding or the end-of-archive blocks. Every
                // entry before was read whole, so this is the end; a stream cut short
                // anywhere else fails inside an entry, and the diffID tells either way.
                Err(e) if e.kind() == io::ErrorKind::Other && e.to_string().contains("EOF") => {
                    break
                }
                Err(e) => return Err(stream(e)),
            };
            u.apply(entry)?;
        }
    }
    // The end-of-archive blocks and any padding count in the diffID too.
    io::copy(&mut hashing, &mut io::sink()).map_err(stream)?;
    u.finish()?;
    let actual = hashing.hasher.finish();
    if let Some(expected) = expected_diff_id {
        if *expected != actual {
            return Err(UnpackError::DiffIdMismatch {
                layer: layer.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(Unpacked {
        diff_id: actual,
        size: hashing.size,
        whiteouts: u.whiteouts.iter().map(|c| join(c)).collect(),
    })
}

/// The error for a read that [`Bounded`] refused.
fn header_too_large(layer: &str, e: &io::Error) -> UnpackError {
    let (what, size, limit) = HeaderTooLarge::find(e)
        .map(|t| (t.what, t.size, t.limit))
        .unwrap_or(("an extension header", 0, 0));
    UnpackError::HeaderTooLarge {
        layer: layer.to_string(),
        what,
        size,
        limit,
    }
}

/// A normalised entry path: its components below the root (empty for the root itself).
type Comps = Vec<OsString>;

fn normalise(raw: &[u8]) -> Result<Comps, String> {
    if raw.contains(&0) {
        return Err("the name holds a NUL byte".into());
    }
    let mut out: Comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("the name climbs out of the root with `..`".into());
                }
            }
            _ => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

fn display(c: &[OsString]) -> String {
    let v: Vec<String> = c.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    format!("/{}", v.join("/"))
}

fn join(c: &[OsString]) -> PathBuf {
    if c.is_empty() {
        return PathBuf::from(".");
    }
    c.iter().collect()
}

struct Unpacker<'a> {
    layer: &'a str,
    root: OwnedFd,
    opts: &'a UnpackOptions,
    /// Directories and their mtimes, set last (writing into a directory changes its mtime).
    dirs: Vec<(Comps, i64)>,
    /// What this layer wrote (for opaque directories in Apply mode).
    added: HashSet<Comps>,
    /// Directories this layer marks opaque (Apply mode: emptied of older content at the end).
    opaque: Vec<Comps>,
    /// Whiteout devices made (Overlay mode).
    whiteouts: Vec<Comps>,
    /// Bytes of file data written so far (bounded by `opts.max_size`).
    written: u64,
    /// The last parent directory opened, kept while no entry can have changed the tree's
    /// directories.
    parent_cache: Option<(Comps, OwnedFd)>,
}

fn io_of(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Unpacker<'_> {
    fn refused(&self, entry: &str, cause: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            cause: cause.into(),
        }
    }

    fn failed(&self, entry: &str, op: &'static str, e: impl Into<io::Error>) -> UnpackError {
        UnpackError::Entry {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            op,
            source: e.into(),
        }
    }

    /// Opens a directory of the tree, resolved inside the root.
    fn open_in_root(&self, c: &[OsString]) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.root, &join(c), how)
    }

    /// The parent directory of an entry, made (0755, root-owned) where missing.
    fn parent(&mut self, entry: &str, c: &[OsString]) -> Result<OwnedFd, UnpackError> {
        let p = &c[..c.len().saturating_sub(1)];
        if let Some((cached, fd)) = &self.parent_cache {
            if cached.as_slice() == p {
                return fd
                    .try_clone()
                    .map_err(|e| self.failed(entry, "open its directory", e));
            }
        }
        let fd = match self.open_in_root(p) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                for i in 1..=p.len() {
                    match self.open_in_root(&p[..i]) {
                        Ok(_) => continue,
                        Err(Errno::ENOENT) => {
                            let up = self
                                .open_in_root(&p[..i - 1])
                                .map_err(|e| self.failed(entry, "open its directory", io_of(e)))?;
                            match mkdirat(
                                &up,
                                p[i - 1].as_os_str(),
                                Mode::from_bits_truncate(0o755),
                            ) {
                                Ok(()) | Err(Errno::EEXIST) => {}
                                Err(e) => {
                                    return Err(self.failed(entry, "make its directory", io_of(e)))
                                }
                            }
                        }
                        Err(e) => return Err(self.failed(entry, "open its directory", io_of(e))),
                    }
                }
                self.open_in_root(p)
                    .map_err(|e| self.failed(entry, "open its directory", io_of(e)))?
            }
            Err(Errno::ENOTDIR) => {
                return Err(self.refused(entry, "a parent in its path is not a directory"))
            }
            Err(e) => return Err(self.failed(entry, "open its directory", io_of(e))),
        };
        let keep = fd
            .try_clone()
            .map_err(|e| self.failed(entry, "open its directory", e))?;
        self.parent_cache = Some((p.to_vec(), keep));
        Ok(fd)
    }

    fn apply<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let c = normalise(&raw).map_err(|why| self.refused(&name, why))?;
        let h = e.header();
        let kind = h.entry_type();
        let mode = h
            .mode()
            .map_err(|err| self.failed(&name, "read its mode", err))?
            & 0o7777;
        // An empty owner field reads as 0, as Go's archive/tar (which wrote most layers)
        // reads it.
        let uid = h.uid().unwrap_or(0);
        let gid = h.gid().unwrap_or(0);
        let mtime = h.mtime().unwrap_or(0) as i64;
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let xattrs = self.xattrs(&name, &mut e)?;
        let base = c.last().map(|s| s.as_bytes().to_vec()).unwrap_or_default();

        // Whiteouts.
        if base == b".wh..wh..opq" {
            let dir = c[..c.len() - 1].to_vec();
            return self.opaque_marker(&name, dir);
        }
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.refused(&name, "a whiteout of no name"));
            }
            let mut target = c[..c.len() - 1].to_vec();
            target.push(OsString::from_vec(hidden.to_vec()));
            return self.whiteout(&name, target);
        }

        if c.is_empty() {
            // The root itself: only a directory, and only its metadata.
            if kind != tar::EntryType::Directory {
                return Err(self.refused(&name, "the root entry is not a directory"));
            }
            let fd = self
                .root
                .try_clone()
                .map_err(|err| self.failed(&name, "open the root", err))?;
            let dir = reopen_dir(&fd, ".")
                .map_err(|err| self.failed(&name, "open the root", io_of(err)))?;
            self.set_owner_mode(&name, &dir, uid, gid, mode)?;
            self.set_xattrs(&name, &dir, &xattrs)?;
            self.dirs.push((c, mtime));
            return Ok(());
        }

        let parent = self.parent(&name, &c)?;
        let leaf = c[c.len() - 1].clone();
        // The entry and every directory above it belong to this layer (Apply's opaque rule).
        for i in 1..=c.len() {
            if !self.added.contains(&c[..i]) {
                self.added.insert(c[..i].to_vec());
            }
        }
        match kind {
            tar::EntryType::Directory => {
                let existing = stat_at(&parent, &leaf);
                let is_dir = matches!(existing, Some(m) if m & libc::S_IFMT == libc::S_IFDIR);
                if !is_dir {
                    if existing.is_some() {
                        self.remove(&name, &parent, &leaf)?;
                    }
                    match mkdirat(&parent, leaf.as_os_str(), Mode::from_bits_truncate(0o700)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(err) => {
                            return Err(self.failed(&name, "make the directory", io_of(err)))
                        }
                    }
                }
                let dir = reopen_dir(&parent, leaf.as_os_str())
                    .map_err(|err| self.failed(&name, "open the directory", io_of(err)))?;
                self.set_owner_mode(&name, &dir, uid, gid, mode)?;
                self.set_xattrs(&name, &dir, &xattrs)?;
                self.dirs.push((c, mtime));
                // A directory replaced or made may be a cached parent's ancestor.
                self.parent_cache = None;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let want = e.size();
                if self.written.saturating_add(want) > self.opts.max_size {
                    return Err(self.refused(
                        &name,
                        format!(
                            "the layer unpacks to more than the {}-byte limit",
                            self.opts.max_size
                        ),
                    ));
                }
                self.clear(&name, &parent, &leaf)?;
                let fd = nix::fcntl::openat(
                    &parent,
                    leaf.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| self.failed(&name, "create the file", io_of(err)))?;
                let mut f = File::from(fd);
                let got = io::copy(&mut e, &mut f)
                    .map_err(|err| self.failed(&name, "write the file", err))?;
                self.written += got;
                if got != want {
                    return Err(self.refused(
                        &name,
                        format!("the stream ends after {got} of its {want} bytes"),
                    ));
                }
                // chown clears setuid and file capabilities: owner, then mode, then xattrs.
                self.set_owner_mode(&name, &f, uid, gid, mode)?;
                self.set_xattrs(&name, &f, &xattrs)?;
                let t = TimeSpec::new(mtime, 0);
                futimens(&f, &t, &t)
                    .map_err(|err| self.failed(&name, "set its times", io_of(err)))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(&name, "a symlink without a target"))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(self.refused(&name, "the link target holds a NUL byte"));
                }
                self.clear(&name, &parent, &leaf)?;
                symlinkat(OsStr::from_bytes(&target), &parent, leaf.as_os_str())
                    .map_err(|err| self.failed(&name, "make the symlink", io_of(err)))?;
                if self.opts.preserve_owner {
                    fchownat(
                        &parent,
                        leaf.as_os_str(),
                        Some(Uid::from_raw(uid as u32)),
                        Some(Gid::from_raw(gid as u32)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|err| self.failed(&name, "set its owner", io_of(err)))?;
                }
                let t = TimeSpec::new(mtime, 0);
                utimensat(
                    &parent,
                    leaf.as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|err| self.failed(&name, "set its times", io_of(err)))?;
                // A link may now stand where a cached path went through a directory.
                self.parent_cache = None;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(&name, "a hardlink without a target"))?
                    .into_owned();
                let tc = normalise(&target)
                    .map_err(|why| self.refused(&name, format!("its target: {why}")))?;
                if tc.is_empty() {
                    return Err(self.refused(&name, "a hardlink to the root directory"));
                }
                let tparent = self
                    .open_in_root(&tc[..tc.len() - 1])
                    .map_err(|err| self.failed(&name, "find the hardlink's target", io_of(err)))?;
                let tleaf = tc[tc.len() - 1].clone();
                match stat_at(&tparent, &tleaf) {
                    None => {
                        return Err(self
                            .refused(&name, format!("its target {} does not exist", display(&tc))))
                    }
                    Some(m) if m & libc::S_IFMT == libc::S_IFDIR => {
                        return Err(self.refused(
                            &name,
                            format!("a hardlink to the directory {}", display(&tc)),
                        ))
                    }
                    Some(_) => {}
                }
                if tc == c {
                    return Ok(());
                }
                self.clear(&name, &parent, &leaf)?;
                linkat(
                    &tparent,
                    tleaf.as_os_str(),
                    &parent,
                    leaf.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|err| self.failed(&name, "make the hardlink", io_of(err)))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char | tar::EntryType::Block => {
                        let f = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, makedev(major as u64, minor as u64))
                    }
                    _ => (SFlag::S_IFIFO, 0),
                };
                self.clear(&name, &parent, &leaf)?;
                mknodat(
                    &parent,
                    leaf.as_os_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|err| self.failed(&name, "make the node", io_of(err)))?;
                if self.opts.preserve_owner {
                    fchownat(
                        &parent,
                        leaf.as_os_str(),
                        Some(Uid::from_raw(uid as u32)),
                        Some(Gid::from_raw(gid as u32)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|err| self.failed(&name, "set its owner", io_of(err)))?;
                }
                nix::sys::stat::fchmodat(
                    &parent,
                    leaf.as_os_str(),
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|err| self.failed(&name, "set its mode", io_of(err)))?;
                let t = TimeSpec::new(mtime, 0);
                utimensat(
                    &parent,
                    leaf.as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|err| self.failed(&name, "set its times", io_of(err)))?;
            }
            other => {
                return Err(self.refused(&name, format!("an entry of unsupported type {other:?}")))
            }
        }
        Ok(())
    }

    fn xattrs<R: Read>(
        &self,
        name: &str,
        e: &mut tar::Entry<'_, R>,
    ) -> Result<Vec<(CString, Vec<u8>)>, UnpackError> {
        let mut out = Vec::new();
        let Some(exts) = e
            .pax_extensions()
            .map_err(|err| self.failed(name, "read its PAX records", err))?
        else {
            return Ok(out);
        };
        for ext in exts {
            let ext = ext.map_err(|err| self.failed(name, "read its PAX records", err))?;
            let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if !xattr_kept(key) {
                continue;
            }
            let Ok(k) = CString::new(key.to_vec()) else {
                return Err(self.refused(name, "an xattr name holds a NUL byte"));
            };
            out.push((k, ext.value_bytes().to_vec()));
        }
        Ok(out)
    }

    fn set_owner_mode<F: AsFd>(
        &self,
        name: &str,
        f: &F,
        uid: u64,
        gid: u64,
        mode: u32,
    ) -> Result<(), UnpackError> {
        if self.opts.preserve_owner {
            fchown(
                f,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
            )
            .map_err(|err| self.failed(name, "set its owner", io_of(err)))?;
        }
        fchmod(f, Mode::from_bits_truncate(mode))
            .map_err(|err| self.failed(name, "set its mode", io_of(err)))
    }

    fn set_xattrs<F: AsFd>(
        &self,
        name: &str,
        f: &F,
        xattrs: &[(CString, Vec<u8>)],
    ) -> Result<(), UnpackError> {
        for (k, v) in xattrs {
            set_xattr(f, k, v).map_err(|err| self.failed(name, "set an xattr", err))?;
        }
        Ok(())
    }

    /// Removes whatever is at parent/leaf, so a new entry can be made there.
    fn clear(&mut self, name: &str, parent: &OwnedFd, leaf: &OsStr) -> Result<(), UnpackError> {
        if stat_at(parent, leaf).is_some() {
            self.remove(name, parent, leaf)?;
        }
        Ok(())
    }

    /// Removes parent/leaf, recursively for a directory, never following a link.
    fn remove(&mut self, name: &str, parent: &OwnedFd, leaf: &OsStr) -> Result<(), UnpackError> {
        remove_tree(parent, leaf)
            .map_err(|err| self.failed(name, "remove what was there", io_of(err)))?;
        self.parent_cache = None;
        Ok(())
    }

    fn whiteout(&mut self, name: &str, target: Comps) -> Result<(), UnpackError> {
        let parent = self.parent(name, &target)?;
        let leaf = target[target.len() - 1].clone();
        match self.opts.whiteouts {
            Whiteouts::Overlay => {
                self.clear(name, &parent, &leaf)?;
                mknodat(
                    &parent,
                    leaf.as_os_str(),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|err| self.failed(name, "make the whiteout", io_of(err)))?;
                self.whiteouts.push(target.clone());
                self.added.insert(target);
            }
            Whiteouts::Apply => {
                self.clear(name, &parent, &leaf)?;
            }
        }
        Ok(())
    }

    fn opaque_marker(&mut self, name: &str, dir: Comps) -> Result<(), UnpackError> {
        match self.opts.whiteouts {
            Whiteouts::Overlay => {
                let mut probe = dir.clone();
                probe.push(OsString::from(".wh..wh..opq"));
                let parent = self.parent(name, &probe)?;
                let fd = reopen_dir(&parent, ".")
                    .map_err(|err| self.failed(name, "open the opaque directory", io_of(err)))?;
                let k = c"trusted.overlay.opaque";
                // SAFETY: fsetxattr reads the NUL-terminated name and one byte.
                let r = unsafe {
                    libc::fsetxattr(fd.as_raw_fd(), k.as_ptr(), b"y".as_ptr().cast(), 1, 0)
                };
                if r < 0 {
                    return Err(self.failed(
                        name,
                        "mark the directory opaque",
                        io::Error::last_os_error(),
                    ));
                }
            }
            Whiteouts::Apply => self.opaque.push(dir),
        }
        Ok(())
    }

    /// Apply mode: empty each opaque directory of what this layer did not add.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for dir in std::mem::take(&mut self.opaque) {
            let name = display(&dir);
            let fd = match self.open_in_root(&dir) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(err) => {
                    return Err(self.failed(&name, "open the opaque directory", io_of(err)))
                }
            };
            let dirfd = reopen_dir(&fd, ".")
                .map_err(|err| self.failed(&name, "open the opaque directory", io_of(err)))?;
            self.prune_older(&name, dirfd, dir.clone())?;
        }
        for (c, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let name = display(&c);
            let t = TimeSpec::new(mtime, 0);
            let r = if c.is_empty() {
                utimensat(&self.root, ".", &t, &t, UtimensatFlags::NoFollowSymlink)
            } else {
                let parent = match self.open_in_root(&c[..c.len() - 1]) {
                    Ok(p) => p,
                    Err(_) => continue, // removed by a later entry
                };
                utimensat(
                    &parent,
                    c[c.len() - 1].as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
            };
            match r {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(err) => return Err(self.failed(&name, "set its times", io_of(err))),
            }
        }
        Ok(())
    }

    fn prune_older(&self, name: &str, dirfd: OwnedFd, at: Comps) -> Result<(), UnpackError> {
        let children = list_dir(&dirfd)
            .map_err(|err| self.failed(name, "list the opaque directory", io_of(err)))?;
        for child in children {
            let mut c = at.clone();
            c.push(child.clone());
            if !self.added.contains(&c) {
                remove_tree(&dirfd, &child)
                    .map_err(|err| self.failed(name, "empty the opaque directory", io_of(err)))?;
            } else if stat_at(&dirfd, &child).is_some_and(|m| m & libc::S_IFMT == libc::S_IFDIR) {
                let sub = reopen_dir(&dirfd, child.as_os_str())
                    .map_err(|err| self.failed(name, "open a directory", io_of(err)))?;
                self.prune_older(name, sub, c)?;
            }
        }
        Ok(())
    }
}

/// The st_mode of parent/leaf (not following a link), or None if absent.
fn stat_at(parent: &OwnedFd, leaf: &OsStr) -> Option<u32> {
    nix::sys::stat::fstatat(parent, leaf, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| s.st_mode)
}

#[cfg(test)]
mod tests;
