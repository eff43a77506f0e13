//! An initramfs writer: a newc ("070701") cpio archive, gzip'd, as the Linux kernel unpacks
//! it into its first root file system (`Documentation/driver-api/early-userspace/
//! buffer-format.rst`).
//!
//! Entries are directories, regular files (from a host path or from bytes), symlinks and
//! character devices. Paths are relative inside the archive; missing parent directories are
//! added (mode 0755) before their first child, since the kernel's unpacker creates no
//! parents. Owners are root, times are zero: the same entries make the same archive.
//!
//! Each entry is a 110-byte header of 13 eight-digit hex fields after the magic, the name
//! and its NUL padded to a multiple of four, then the data padded to a multiple of four; a
//! `TRAILER!!!` entry ends the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// The kernel's `PATH_MAX`, NUL included.
const NAME_MAX: usize = 4096;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone)]
enum Kind {
    Dir { implicit: bool },
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    mode: u32,
    kind: Kind,
}

/// The entries of an initramfs, in the order they are written.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory with permission bits `mode`.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        self.add(path, mode, Kind::Dir { implicit: false })
    }

    /// A regular file whose content is read from `host` when the archive is written.
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        host: impl Into<PathBuf>,
    ) -> Result<&mut Self, InitramfsError> {
        self.add(path, mode, Kind::File(host.into()))
    }

    /// A regular file with the given content.
    pub fn bytes(
        &mut self,
        path: &str,
        mode: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, InitramfsError> {
        self.add(path, mode, Kind::Bytes(data.into()))
    }

    /// A symbolic link to `target` (taken as it is: relative or absolute in the guest).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        if target.is_empty() || target.contains('\0') || target.len() >= NAME_MAX {
            return Err(InitramfsError::LinkTarget {
                path: path.to_string(),
            });
        }
        self.add(path, 0o777, Kind::Symlink(target.to_string()))
    }

    /// A character device node.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.add(path, mode, Kind::CharDevice { major, minor })
    }

    /// `/dev/console` and `/dev/null`: the kernel opens `/dev/console` for init's stdio
    /// before init runs, so it must be in the archive itself.
    pub fn console_and_null(&mut self) -> Result<&mut Self, InitramfsError> {
        self.char_device("dev/console", 0o600, 5, 1)?
            .char_device("dev/null", 0o666, 1, 3)
    }

    /// The archive paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.path.as_str())
    }

    fn add(&mut self, path: &str, mode: u32, kind: Kind) -> Result<&mut Self, InitramfsError> {
        if mode & !0o7777 != 0 {
            return Err(InitramfsError::Mode {
                path: path.to_string(),
                mode,
            });
        }
        let clean = normalize(path)?;
        // Parents first, as directories.
        let mut at = 0;
        while let Some(slash) = clean[at..].find('/') {
            let parent = &clean[..at + slash];
            match self.index.get(parent).map(|&i| &self.entries[i].kind) {
                Some(Kind::Dir { .. }) => {}
                Some(_) => {
                    return Err(InitramfsError::NotADirectory {
                        path: parent.to_string(),
                    })
                }
                None => self.push(parent.to_string(), 0o755, Kind::Dir { implicit: true }),
            }
            at += slash + 1;
        }
        match self.index.get(&clean).copied() {
            None => self.push(clean, mode, kind),
            // An explicit directory over one added as a parent sets its mode.
            Some(i)
                if matches!(
                    (&self.entries[i].kind, &kind),
                    (Kind::Dir { implicit: true }, Kind::Dir { .. })
                ) =>
            {
                self.entries[i].mode = mode;
                self.entries[i].kind = kind;
            }
            Some(_) => return Err(InitramfsError::Duplicate { path: clean }),
        }
        Ok(self)
    }

    fn push(&mut self, path: String, mode: u32, kind: Kind) {
        self.index.insert(path.clone(), self.entries.len());
        self.entries.push(Entry { path, mode, kind });
    }

    /// Writes the gzip'd archive to `out` and returns it.
    pub fn write_gz<W: Write>(&self, out: W) -> Result<W, InitramfsError> {
        let gz = self.write_cpio(GzEncoder::new(out, Compression::default()))?;
        gz.finish().map_err(InitramfsError::Write)
    }

    /// Writes the archive, uncompressed, to `out` and returns it.
    pub fn write_cpio<W: Write>(&self, mut out: W) -> Result<W, InitramfsError> {
        for (i, e) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(|_| InitramfsError::TooMany)?;
            write_entry(&mut out, ino, e)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        trailer
            .write(&mut out, TRAILER)
            .map_err(InitramfsError::Write)?;
        Ok(out)
    }

    /// Writes the gzip'd archive to a new file at `path` (mode 0644, replaced if present).
    pub fn write_file(&self, path: &Path) -> Result<(), InitramfsError> {
        let create = |path: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(path)
        };
        let file = create(path).map_err(|source| InitramfsError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let file = self.write_gz(io::BufWriter::new(file))?;
        file.into_inner()
            .map_err(|e| InitramfsError::Write(e.into_error()))?
            .sync_all()
            .map_err(InitramfsError::Write)
    }
}

/// `path` without leading slashes, checked: no empty, `.` or `..` components, no NUL.
fn normalize(path: &str) -> Result<String, InitramfsError> {
    let bad = || InitramfsError::Path {
        path: path.to_string(),
    };
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.len() >= NAME_MAX || rel.contains('\0') {
        return Err(bad());
    }
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad());
    }
    Ok(rel.to_string())
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl Header {
    fn write<W: Write>(&self, out: &mut W, name: &str) -> io::Result<()> {
        let namesize = name.len() + 1;
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check.
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            0,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize as u32,
            0,
        ];
        let mut head = Vec::with_capacity(HEADER_LEN + namesize + 3);
        head.extend_from_slice(MAGIC);
        for f in fields {
            head.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        head.resize(head.len() + pad4(head.len()), 0);
        out.write_all(&head)
    }
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn write_entry<W: Write>(out: &mut W, ino: u32, e: &Entry) -> Result<(), InitramfsError> {
    let header = |mode: u32, nlink: u32, size: usize, rdev: (u32, u32)| {
        let size = u32::try_from(size).map_err(|_| InitramfsError::TooLarge {
            path: e.path.clone(),
        })?;
        Ok::<_, InitramfsError>(Header {
            ino,
            mode,
            nlink,
            size,
            rdev,
        })
    };
    let w = InitramfsError::Write;
    match &e.kind {
        Kind::Dir { .. } => header(S_IFDIR | e.mode, 2, 0, (0, 0))?
            .write(out, &e.path)
            .map_err(w),
        Kind::CharDevice { major, minor } => header(S_IFCHR | e.mode, 1, 0, (*major, *minor))?
            .write(out, &e.path)
            .map_err(w),
        Kind::Symlink(target) => {
            header(S_IFLNK | e.mode, 1, target.len(), (0, 0))?
                .write(out, &e.path)
                .map_err(w)?;
            write_data(out, target.as_bytes())
        }
        Kind::Bytes(data) => {
            header(S_IFREG | e.mode, 1, data.len(), (0, 0))?
                .write(out, &e.path)
                .map_err(w)?;
            write_data(out, data)
        }
        Kind::File(host) => {
            let source = |source| InitramfsError::Source {
                path: host.clone(),
                source,
            };
            let file = File::open(host).map_err(source)?;
            let meta = file.metadata().map_err(source)?;
            if !meta.is_file() {
                return Err(InitramfsError::NotAFile { path: host.clone() });
            }
            let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            header(S_IFREG | e.mode, 1, size, (0, 0))?
                .write(out, &e.path)
                .map_err(w)?;
            // Exactly the size in the header: a file that shrank meanwhile is an error,
            // not a corrupt archive; one that grew is cut at its size at open.
            let copied = io::copy(&mut file.take(meta.len()), out).map_err(source)?;
            if copied != meta.len() {
                return Err(InitramfsError::Changed { path: host.clone() });
            }
            out.write_all(&[0; 3][..pad4(size)]).map_err(w)
        }
    }
}

fn write_data<W: Write>(out: &mut W, data: &[u8]) -> Result<(), InitramfsError> {
    out.write_all(data)
        .and_then(|()| out.write_all(&[0; 3][..pad4(data.len())]))
        .map_err(InitramfsError::Write)
}

/// An initramfs that cannot be built or written.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("initramfs path {path:?} is not a relative path of plain components")]
    Path { path: String },
    #[error("initramfs entry {path:?} has mode {mode:#o}, more than permission bits")]
    Mode { path: String, mode: u32 },
    #[error("initramfs path {path:?} is added twice")]
    Duplicate { path: String },
    #[error("initramfs path {path:?} is a parent but not a directory")]
    NotADirectory { path: String },
    #[error("initramfs symlink {path:?} has an empty or invalid target")]
    LinkTarget { path: String },
    #[error("initramfs entry {path:?} is 4 GiB or more (newc sizes are 32-bit)")]
    TooLarge { path: String },
    #[error("more initramfs entries than newc inode numbers")]
    TooMany,
    #[error("cannot read {path} for the initramfs")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} shrank while it was written into the initramfs")]
    Changed { path: PathBuf },
    #[error("cannot create the initramfs {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the initramfs")]
    Write(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    /// One entry read back by a parser written from the format's description, not from the
    /// writer above.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        name: String,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        ino: u32,
        data: Vec<u8>,
    }

    fn parse(archive: &[u8]) -> Vec<Parsed> {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "entry at unaligned offset {at}");
            let h = &archive[at..at + HEADER_LEN];
            assert_eq!(&h[..6], b"070701", "magic at {at}");
            let field = |n: usize| hex(&h[6 + 8 * n..14 + 8 * n]);
            let (ino, mode, uid, gid, nlink, mtime, size) = (
                field(0),
                field(1),
                field(2),
                field(3),
                field(4),
                field(5),
                field(6) as usize,
            );
            assert_eq!((uid, gid, mtime), (0, 0, 0));
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name_at = at + HEADER_LEN;
            let name = &archive[name_at..name_at + namesize];
            assert_eq!(name.last(), Some(&0), "name not NUL-terminated");
            let name = String::from_utf8(name[..namesize - 1].to_vec()).unwrap();
            let mut data_at = name_at + namesize;
            while !data_at.is_multiple_of(4) {
                assert_eq!(archive[data_at], 0, "name padding not zero");
                data_at += 1;
            }
            let data = archive[data_at..data_at + size].to_vec();
            at = data_at + size;
            while !at.is_multiple_of(4) {
                assert_eq!(archive[at], 0, "data padding not zero");
                at += 1;
            }
            if name == TRAILER {
                assert_eq!(at, archive.len(), "bytes after the trailer");
                return out;
            }
            out.push(Parsed {
                name,
                mode,
                nlink,
                rdev,
                ino,
                data,
            });
        }
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_archive_lists_what_was_put_in() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("busybox");
        std::fs::write(&host, b"ELF and more").unwrap();
        let mut i = Initramfs::new();
        i.file("/bin/busybox", 0o755, &host)
            .unwrap()
            .symlink("bin/sh", "busybox")
            .unwrap()
            .bytes("init", 0o755, "#!/bin/sh\n")
            .unwrap()
            .dir("proc", 0o555)
            .unwrap()
            .console_and_null()
            .unwrap();
        let parsed = parse(&gunzip(&i.write_gz(Vec::new()).unwrap()));
        let got: Vec<(&str, u32, &[u8])> = parsed
            .iter()
            .map(|p| (p.name.as_str(), p.mode, p.data.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("bin", S_IFDIR | 0o755, &b""[..]),
                ("bin/busybox", S_IFREG | 0o755, b"ELF and more"),
                ("bin/sh", S_IFLNK | 0o777, b"busybox"),
                ("init", S_IFREG | 0o755, b"#!/bin/sh\n"),
                ("proc", S_IFDIR | 0o555, b""),
                ("dev", S_IFDIR | 0o755, b""),
                ("dev/console", S_IFCHR | 0o600, b""),
                ("dev/null", S_IFCHR | 0o666, b""),
            ]
        );
        let console = parsed.iter().find(|p| p.name == "dev/console").unwrap();
        assert_eq!(console.rdev, (5, 1));
        assert_eq!(
            parsed.iter().find(|p| p.name == "dev/null").unwrap().rdev,
            (1, 3)
        );
        assert_eq!(parsed[0].nlink, 2, "a directory has two links");
        let mut inos: Vec<u32> = parsed.iter().map(|p| p.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), parsed.len(), "inode numbers must be unique");
    }

    #[test]
    fn sizes_of_every_remainder_are_padded() {
        // Names and data of each length modulo four.
        let mut i = Initramfs::new();
        for n in 1..=8 {
            i.bytes(&"f".repeat(n), 0o644, vec![b'x'; n]).unwrap();
        }
        let parsed = parse(&i.write_cpio(Vec::new()).unwrap());
        assert_eq!(parsed.len(), 8);
        for (n, p) in (1..=8).zip(&parsed) {
            assert_eq!(p.name.len(), n);
            assert_eq!(p.data, vec![b'x'; n]);
        }
    }

    #[test]
    fn paths_are_relative_and_plain() {
        let mut i = Initramfs::new();
        i.bytes("//etc/hostname", 0o644, "vm").unwrap();
        assert_eq!(i.paths().collect::<Vec<_>>(), ["etc", "etc/hostname"]);
        for bad in ["", "/", "a/../b", "./a", "a//b", "a/", "a\0b"] {
            assert!(
                matches!(i.bytes(bad, 0o644, ""), Err(InitramfsError::Path { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn conflicts_are_errors() {
        let mut i = Initramfs::new();
        i.bytes("etc/x", 0o644, "").unwrap();
        assert!(matches!(
            i.bytes("etc/x", 0o644, ""),
            Err(InitramfsError::Duplicate { .. })
        ));
        assert!(matches!(
            i.bytes("etc/x/y", 0o644, ""),
            Err(InitramfsError::NotADirectory { .. })
        ));
        assert!(matches!(
            i.bytes("etc/z", 0o100644, ""),
            Err(InitramfsError::Mode { .. })
        ));
        // A directory made as a parent may be given its mode later.
        i.dir("etc", 0o700).unwrap();
        let parsed = parse(&i.write_cpio(Vec::new()).unwrap());
        assert_eq!(parsed[0].mode, S_IFDIR | 0o700);
    }

    #[test]
    fn a_missing_host_file_is_named() {
        let mut i = Initramfs::new();
        i.file("bin/x", 0o755, "/nonexistent/berth-file").unwrap();
        let e = i.write_gz(Vec::new()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/berth-file"), "{e}");
    }

    #[test]
    fn the_same_entries_make_the_same_archive() {
        let mut i = Initramfs::new();
        i.bytes("a/b", 0o600, "c")
            .unwrap()
            .symlink("d", "/a/b")
            .unwrap();
        assert_eq!(
            i.write_gz(Vec::new()).unwrap(),
            i.write_gz(Vec::new()).unwrap()
        );
    }

    #[test]
    fn write_file_writes_a_gzip_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.gz");
        let mut i = Initramfs::new();
        i.bytes("init", 0o755, "#!/bin/sh\n").unwrap();
        i.write_file(&path).unwrap();
        let parsed = parse(&gunzip(&std::fs::read(&path).unwrap()));
        assert_eq!(parsed[0].name, "init");
    }
}
