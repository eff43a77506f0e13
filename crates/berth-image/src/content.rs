//! A content-addressed blob store on disk.
//!
//! ```text
//! <root>/blobs/<algorithm>/<hex>      complete blobs, verified, read-only
//! <root>/ingest/<algorithm>-<hex>     a blob being written (kept if the writer is killed)
//! <root>/ingest/<algorithm>-<hex>.lock  held (flock) by the one writer of that blob
//! ```
//!
//! A writer takes the blob's ingest lock, so two pulls of one blob never write it twice: the
//! second waits, then finds the blob committed. A writer starts at the end of whatever an
//! earlier, killed writer left, re-hashing those bytes, so a fetch resumes at
//! [`Writer::offset`]. Commit checks size and digest, syncs the data, renames it into
//! `blobs/` and syncs the directory: a crash leaves either no blob or the whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Digest, Hasher};

/// Errors of the content store; each names the blob or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
    #[error("blob {expected}: the data written hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: {actual} bytes were written, the descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest}: more than the {size} bytes its descriptor says")]
    TooLarge { digest: Digest, size: u64 },
    /// A blob read into memory as a JSON document that is larger than any should be.
    #[error("blob {digest} is {size} bytes, over the {limit}-byte limit for a manifest or config")]
    DocumentTooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
}

pub type Result<T> = std::result::Result<T, ContentError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ContentError {
    let context = context.into();
    move |source| ContentError::Io { context, source }
}

/// The store under one root directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens the store at `root`, making its directories (mode 0700) if needed.
    pub fn open(root: &Path) -> Result<ContentStore> {
        for d in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = root.join(d);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err(format!("create {}", p.display())))?;
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    /// Where the committed blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}-{}", d.algorithm().name(), d.hex()))
    }

    pub fn exists(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(d.clone()),
            _ => ContentError::Io {
                context: format!("open blob {d}"),
                source: e,
            },
        })
    }

    /// The whole blob in memory, for manifests, indexes and configs: at most
    /// [`crate::MAX_CONFIG`] bytes, the largest of them (stream layers with
    /// [`Self::open_blob`]).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let limit = crate::MAX_CONFIG;
        let f = self.open_blob(d)?;
        let size = f
            .metadata()
            .map_err(io_err(format!("stat blob {d}")))?
            .len();
        if size > limit {
            return Err(ContentError::DocumentTooLarge {
                digest: d.clone(),
                size,
                limit,
            });
        }
        let mut data = Vec::new();
        f.take(limit)
            .read_to_end(&mut data)
            .map_err(io_err(format!("read blob {d}")))?;
        Ok(data)
    }

    /// Removes a committed blob; false if it was not there.
    pub fn delete(&self, d: &Digest) -> Result<bool> {
        match fs::remove_file(self.blob_path(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(format!("delete blob {d}"))(e)),
        }
    }

    /// Every committed blob.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            for e in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
                let e = e.map_err(io_err(format!("read {}", dir.display())))?;
                let name = e.file_name();
                if let Ok(d) = format!("{alg}:{}", name.to_string_lossy()).parse() {
                    out.push(d);
                }
            }
        }
        out.sort_by_key(|d: &Digest| d.to_string());
        Ok(out)
    }

    /// Stores `data` as blob `d` (verified); nothing to do if it is there already.
    pub fn put(&self, d: &Digest, data: &[u8]) -> Result<()> {
        match self.writer(d, Some(data.len() as u64))? {
            None => Ok(()),
            Some(mut w) => {
                let done = w.offset() as usize;
                w.write_data(&data[done.min(data.len())..])?;
                w.commit()
            }
        }
    }

    /// A writer for blob `d` of `size` bytes (if known), or `None` if the blob is already
    /// committed. Waits while another writer holds the same blob.
    pub fn writer(&self, d: &Digest, size: Option<u64>) -> Result<Option<Writer>> {
        if self.exists(d) {
            return Ok(None);
        }
        let partial = self.ingest_path(d);
        let lock_path = partial.with_extension("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(format!("open {}", lock_path.display())))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| ContentError::Io {
                context: format!("lock {}", lock_path.display()),
                source: e.into(),
            })?;
        // The writer we waited for may have committed it.
        if self.exists(d) {
            return Ok(None);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc_o_nofollow())
            .mode(0o600)
            .open(&partial)
            .map_err(io_err(format!("open {}", partial.display())))?;
        let mut hasher = d.algorithm().hasher();
        let mut written = 0u64;
        let len = file
            .metadata()
            .map_err(io_err(format!("stat {}", partial.display())))?
            .len();
        if size.is_some_and(|s| len > s) {
            // More than the blob holds: not a prefix of it. Start again.
            file.set_len(0)
                .map_err(io_err(format!("truncate {}", partial.display())))?;
        } else {
            // Resume: hash what an earlier writer left.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(io_err(format!("read {}", partial.display())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                written += n as u64;
            }
        }
        file.seek(SeekFrom::Start(written))
            .map_err(io_err(format!("seek {}", partial.display())))?;
        Ok(Some(Writer {
            file,
            _lock: lock,
            hasher,
            written,
            expected: d.clone(),
            size,
            partial,
            dest: self.blob_path(d),
        }))
    }
}

impl ContentStore {
    /// Stores a blob whose digest is not known in advance (an archive member, a tarball):
    /// streams `reader` into a temporary file under `ingest/` while hashing it with
    /// sha256, then commits it under the digest found. Returns (digest, size).
    pub fn ingest<R: Read>(&self, mut reader: R) -> Result<(Digest, u64)> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tmp = self.root.join("ingest").join(format!(
            "unknown-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .custom_flags(libc_o_nofollow())
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(format!("create {}", tmp.display())))?;
            let mut hasher = crate::digest::Algorithm::Sha256.hasher();
            let mut size = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err("read the blob's data")(e)),
                };
                file.write_all(&buf[..n])
                    .map_err(io_err(format!("write {}", tmp.display())))?;
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            let d = hasher.finish();
            if self.exists(&d) {
                let _ = fs::remove_file(&tmp);
                return Ok((d, size));
            }
            file.set_permissions(fs::Permissions::from_mode(0o444))
                .map_err(io_err(format!("seal blob {d}")))?;
            file.sync_all().map_err(io_err(format!("sync blob {d}")))?;
            let dest = self.blob_path(&d);
            fs::rename(&tmp, &dest).map_err(io_err(format!("commit blob {d}")))?;
            if let Some(dir) = dest.parent() {
                File::open(dir)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(format!("sync {}", dir.display())))?;
            }
            Ok((d, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// A fresh directory under `ingest/` for staging (same file system as the blobs);
    /// the caller removes it.
    pub fn staging_dir(&self, purpose: &str) -> Result<PathBuf> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = self.root.join("ingest").join(format!(
            "{purpose}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(io_err(format!("create {}", p.display())))?;
        Ok(p)
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Writes one blob; see [`ContentStore::writer`]. Dropped without [`Writer::commit`], it
/// keeps the data written so far for the next writer to resume from.
pub struct Writer {
    file: File,
    _lock: Flock<File>,
    hasher: Hasher,
    written: u64,
    expected: Digest,
    size: Option<u64>,
    partial: PathBuf,
    dest: PathBuf,
}

impl Writer {
    /// How many bytes of the blob are already written: where a fetch resumes.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Drops what was written and starts the blob again from its first byte (a registry
    /// that ignores a range request sends the whole blob).
    pub fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(io_err(format!("truncate {}", self.partial.display())))?;
        self.hasher = self.expected.algorithm().hasher();
        self.written = 0;
        Ok(())
    }

    /// Appends `data`, hashing it on the way.
    pub fn write_data(&mut self, data: &[u8]) -> Result<()> {
        if let Some(size) = self.size {
            if self.written + data.len() as u64 > size {
                return Err(ContentError::TooLarge {
                    digest: self.expected.clone(),
                    size,
                });
            }
        }
        self.file
            .write_all(data)
            .map_err(io_err(format!("write {}", self.partial.display())))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Verifies size and digest and moves the blob into place. On a mismatch the data is
    /// removed, so the next writer starts clean.
    pub fn commit(self) -> Result<()> {
        let actual = self.hasher.clone().finish();
        let bad = if let Some(size) = self.size.filter(|s| *s != self.written) {
            Some(ContentError::SizeMismatch {
                digest: self.expected.clone(),
                expected: size,
                actual: self.written,
            })
        } else if actual != self.expected {
            Some(ContentError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            })
        } else {
            None
        };
        if let Some(e) = bad {
            let _ = fs::remove_file(&self.partial);
            return Err(e);
        }
        let ctx = |what: &str| format!("{what} blob {}", self.expected);
        self.file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err(ctx("seal")))?;
        self.file.sync_all().map_err(io_err(ctx("sync")))?;
        fs::rename(&self.partial, &self.dest).map_err(io_err(ctx("commit")))?;
        // The lock file can go: a writer still waiting on it, or one that makes a new one,
        // finds the blob committed and writes nothing. (After an abort or a kill it stays,
        // with the partial data it guards.)
        let _ = fs::remove_file(self.partial.with_extension("lock"));
        if let Some(dir) = self.dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(format!("sync {}", dir.display())))?;
        }
        Ok(())
    }

    /// Drops the data written so far.
    pub fn abort(self) -> Result<()> {
        match fs::remove_file(&self.partial) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", self.partial.display()))(e)),
        }
    }
}

#[cfg(test)]
mod tests;
