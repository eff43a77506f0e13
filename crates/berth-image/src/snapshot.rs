//! Snapshots: image layers unpacked once, and each container's root file system made from
//! them.
//!
//! ```text
//! <root>/layers/<chain-id hex>/       one layer, unpacked with overlay whiteouts (committed)
//! <root>/layers/.tmp-<pid>-<n>/       a layer being unpacked (renamed into place when whole)
//! <root>/containers/<id>/upper, work  the container's own writable layer (overlay driver)
//! <root>/containers/<id>/rootfs       where its root file system is mounted (or copied)
//! <root>/containers/<id>/layers.json  the chain IDs it stands on, bottom first
//! ```
//!
//! With the overlay driver a container's rootfs is an overlay of its image's layer
//! directories plus its own upper directory. The lower directories are passed one at a time
//! with `fsconfig(FSCONFIG_SET_STRING, "lowerdir+")` (Linux 6.8+), so the one-page limit on
//! mount(2)'s option string does not cap the number of layers; older kernels get a mount(2)
//! option string, which is refused with a clear error when it would not fit.
//!
//! The copy driver, for hosts without overlayfs, unpacks every layer in order into the
//! container's rootfs with whiteouts applied. Nothing is shared, so it is slower and larger,
//! but it needs nothing from the kernel.

mod overlay;
mod whiteouts;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::fsutil::write_atomic;
use crate::images::{ImageRecord, LayerRecord};
use crate::unpack::{unpack_layer, UnpackError, UnpackOptions, Whiteouts, DEFAULT_MAX_LAYER_SIZE};

/// Errors of the snapshotter; each names the container, layer or directory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: {source}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("container {id}: {cause}")]
    Mount { id: String, cause: String },
    #[error("container {0}: no snapshot")]
    NoSnapshot(String),
    #[error("container {id}: a snapshot exists already")]
    Exists { id: String },
    #[error(transparent)]
    Content(#[from] ContentError),
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

/// How container root file systems are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Copy,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }

    /// `overlay` or `copy`.
    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "overlay" => Some(Driver::Overlay),
            "copy" => Some(Driver::Copy),
            _ => None,
        }
    }

    /// Overlay where the kernel has it (listed in /proc/filesystems), else copy.
    pub fn detect() -> Driver {
        let has = fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            })
            .unwrap_or(false);
        if has {
            Driver::Overlay
        } else {
            Driver::Copy
        }
    }
}

/// What [`Snapshotter::unpack`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Layers unpacked now.
    pub unpacked: usize,
    /// Layers that were unpacked already.
    pub present: usize,
    /// (diffID, bytes of the uncompressed tar) of each layer unpacked now.
    pub sizes: Vec<(Digest, u64)>,
}

/// A layer unpacked into a temporary directory, to be committed.
struct Staged {
    tmp: PathBuf,
    /// Bytes of the layer's uncompressed tar.
    size: u64,
    /// The whiteouts the unpack made (paths below `tmp`).
    whiteouts: Vec<PathBuf>,
}

/// The snapshotter under one root.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    driver: Driver,
    /// The most one layer may unpack to (see [`UnpackOptions::max_size`]).
    max_layer_size: u64,
}

static TMP_SEQ: AtomicU32 = AtomicU32::new(0);

impl Snapshotter {
    /// Opens the snapshotter at `root` with `driver` (detected when `None`).
    pub fn open(root: &Path, driver: Option<Driver>) -> Result<Snapshotter> {
        for d in ["layers", "containers"] {
            mkdir_all(&root.join(d))?;
        }
        Ok(Snapshotter {
            root: root.to_path_buf(),
            driver: driver.unwrap_or_else(Driver::detect),
            max_layer_size: DEFAULT_MAX_LAYER_SIZE,
        })
    }

    /// The same snapshotter, with another bound on what one layer may unpack to.
    pub fn with_max_layer_size(mut self, bytes: u64) -> Snapshotter {
        self.max_layer_size = bytes;
        self
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Where the layer with this chain ID is unpacked (overlay driver; whiteouts as overlay
    /// keeps them): VM mode makes its guest disks from these.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// The directory a container's rootfs is mounted (or copied) at.
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("rootfs")
    }

    /// True when the layer with this chain ID is unpacked.
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    /// Unpacks the image's layers that are not unpacked yet, several at once: with overlay
    /// whiteouts every layer is independent of the others. Then, bottom first, each is
    /// rid of the whiteouts that hide nothing in the layers below it (`whiteouts.rs`) and
    /// committed. A no-op for the copy driver, which unpacks per container.
    pub fn unpack(&self, content: &ContentStore, image: &ImageRecord) -> Result<UnpackStats> {
        let mut stats = UnpackStats::default();
        if self.driver == Driver::Copy {
            return Ok(stats);
        }
        let missing: Vec<usize> = (0..image.layers.len())
            .filter(|&i| !self.has_layer(&image.layers[i].chain_id))
            .collect();
        stats.present = image.layers.len() - missing.len();
        stats.unpacked = missing.len();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8)
            .min(missing.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Vec<std::sync::Mutex<Option<Result<Staged>>>> = missing
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = missing.get(k) else {
                        return;
                    };
                    let r = self.unpack_one(content, &image.layers[i]);
                    if let Ok(mut slot) = done[k].lock() {
                        *slot = Some(r);
                    }
                });
            }
        });
        let staged = missing.iter().zip(done).map(|(&i, slot)| {
            let r = slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(SnapshotError::Io {
                    context: "unpack worker".into(),
                    source: io::Error::other("panicked"),
                })
            });
            (i, r)
        });
        // Bottom first; after a failure, what is left uncommitted goes.
        let mut result = Ok(());
        for (i, r) in staged {
            match r {
                Ok(st) if result.is_ok() => {
                    result = self.commit(image, i, &st);
                    match result {
                        Ok(()) => stats.sizes.push((image.layers[i].diff_id.clone(), st.size)),
                        Err(_) => {
                            let _ = remove_all(&st.tmp);
                        }
                    }
                }
                Ok(st) => {
                    let _ = remove_all(&st.tmp);
                }
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result.map(|()| stats)
    }

    /// Drops the whiteouts of layer `i` of `image` (staged) that hide nothing below it, and
    /// commits it under its chain ID. The layers below are committed: they were before, or
    /// this loop committed them first.
    fn commit(&self, image: &ImageRecord, i: usize, st: &Staged) -> Result<()> {
        let layer = &image.layers[i];
        let dest = self.layer_dir(&layer.chain_id);
        if !st.whiteouts.is_empty() {
            let lowers: Vec<PathBuf> = image.layers[..i]
                .iter()
                .rev()
                .map(|l| self.layer_dir(&l.chain_id))
                .collect();
            whiteouts::drop_unneeded(&st.tmp, &st.whiteouts, &lowers).map_err(|source| {
                SnapshotError::Io {
                    context: format!("layer {}: drop whiteouts that hide nothing", layer.digest),
                    source,
                }
            })?;
        }
        match fs::rename(&st.tmp, &dest) {
            Ok(()) => Ok(()),
            // Another unpack of the same layer won the race: keep its copy.
            Err(_) if dest.is_dir() => remove_all(&st.tmp),
            Err(e) => Err(io_err(format!("commit {}", dest.display()))(e)),
        }
    }

    /// Unpacks one layer into a fresh temporary directory, not committed yet.
    fn unpack_one(&self, content: &ContentStore, layer: &LayerRecord) -> Result<Staged> {
        let tmp = self.root.join("layers").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        // The layer root becomes the container's `/` where no entry sets it: 0755, as
        // every runtime makes it (0700 would lock every other user out of the rootfs).
        mkdir_root(&tmp)?;
        let result = (|| {
            let blob = content.open_blob(&layer.digest)?;
            let reader = io::BufReader::with_capacity(256 * 1024, blob);
            let opts = UnpackOptions {
                whiteouts: Whiteouts::Overlay,
                preserve_owner: true,
                max_size: self.max_layer_size,
            };
            unpack_layer(
                &layer.digest.to_string(),
                reader,
                &tmp,
                &opts,
                Some(&layer.diff_id),
            )
            .map_err(|source| SnapshotError::Unpack {
                layer: layer.digest.clone(),
                source,
            })
        })();
        match result {
            Ok(u) => Ok(Staged {
                tmp,
                size: u.size,
                whiteouts: u.whiteouts,
            }),
            Err(e) => {
                let _ = remove_all(&tmp);
                Err(e)
            }
        }
    }

    /// Makes container `id`'s root file system from `image` and mounts it; returns the
    /// rootfs path. The image must be unpacked first (overlay). On failure nothing of the
    /// container's snapshot remains.
    pub fn prepare(
        &self,
        id: &str,
        content: &ContentStore,
        image: &ImageRecord,
    ) -> Result<PathBuf> {
        let dir = self.container_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::Exists { id: id.into() })
            }
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
        let result = self.prepare_in(id, &dir, content, image);
        if result.is_err() {
            let _ = overlay::unmount(&dir.join("rootfs"));
            let _ = remove_all(&dir);
        }
        result
    }

    fn prepare_in(
        &self,
        id: &str,
        dir: &Path,
        content: &ContentStore,
        image: &ImageRecord,
    ) -> Result<PathBuf> {
        let chain = image.chain();
        let data = serde_json::to_vec(&chain).map_err(|e| SnapshotError::Io {
            context: format!("container {id}: layers"),
            source: io::Error::other(e),
        })?;
        write_atomic(&dir.join("layers.json"), &data, 0o600)
            .map_err(io_err(format!("container {id}: write layers.json")))?;
        let rootfs = dir.join("rootfs");
        mkdir_root(&rootfs)?;
        match self.driver {
            Driver::Overlay => {
                for c in &chain {
                    if !self.has_layer(c) {
                        return Err(SnapshotError::Mount {
                            id: id.into(),
                            cause: format!("layer {c} is not unpacked"),
                        });
                    }
                }
                // overlayfs takes the root's owner and mode from the upper directory.
                mkdir_root(&dir.join("upper"))?;
                mkdir_all(&dir.join("work"))?;
                self.mount(id)?;
            }
            Driver::Copy => {
                for l in &image.layers {
                    let blob = content.open_blob(&l.digest)?;
                    let opts = UnpackOptions {
                        whiteouts: Whiteouts::Apply,
                        preserve_owner: true,
                        max_size: self.max_layer_size,
                    };
                    unpack_layer(
                        &l.digest.to_string(),
                        io::BufReader::with_capacity(256 * 1024, blob),
                        &rootfs,
                        &opts,
                        Some(&l.diff_id),
                    )
                    .map_err(|source| SnapshotError::Unpack {
                        layer: l.digest.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(rootfs)
    }

    /// The chain IDs of the layers container `id`'s root file system was made from, bottom
    /// first.
    pub fn layers_of(&self, id: &str) -> Result<Vec<Digest>> {
        let path = self.container_dir(id).join("layers.json");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NoSnapshot(id.into()))
            }
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        serde_json::from_slice(&data).map_err(|e| SnapshotError::Io {
            context: format!("read {}", path.display()),
            source: io::Error::other(e),
        })
    }

    /// True when the container's rootfs is mounted (always true for the copy driver).
    pub fn is_mounted(&self, id: &str) -> bool {
        match self.driver {
            Driver::Copy => self.container_dir(id).is_dir(),
            Driver::Overlay => overlay::is_mount_point(&self.rootfs(id)),
        }
    }

    /// Mounts an existing container snapshot (again, e.g. after a reboot); a no-op when it is
    /// mounted or for the copy driver.
    pub fn mount(&self, id: &str) -> Result<PathBuf> {
        let dir = self.container_dir(id);
        let rootfs = dir.join("rootfs");
        if self.driver == Driver::Copy || overlay::is_mount_point(&rootfs) {
            return Ok(rootfs);
        }
        let chain = self.layers_of(id)?;
        // overlayfs lists lower directories top first.
        let lowers: Vec<PathBuf> = chain.iter().rev().map(|c| self.layer_dir(c)).collect();
        overlay::mount(&lowers, &dir.join("upper"), &dir.join("work"), &rootfs).map_err(
            |cause| SnapshotError::Mount {
                id: id.into(),
                cause,
            },
        )?;
        Ok(rootfs)
    }

    /// Unmounts a container's rootfs (lazily if busy); a no-op if it is not mounted.
    pub fn unmount(&self, id: &str) -> Result<()> {
        overlay::unmount(&self.rootfs(id)).map_err(|e| SnapshotError::Mount {
            id: id.into(),
            cause: format!("unmount: {e}"),
        })
    }

    /// Unmounts and deletes a container's snapshot, its writable layer included.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.unmount(id)?;
        remove_all(&self.container_dir(id))
    }

    /// The containers that have a snapshot.
    pub fn containers(&self) -> Result<Vec<String>> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
            let e = e.map_err(io_err(format!("read {}", dir.display())))?;
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    /// Every unpacked layer.
    pub fn layers(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("layers");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
            let e = e.map_err(io_err(format!("read {}", dir.display())))?;
            if let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse() {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes unpacked layers that are neither in `keep` nor under a container, and
    /// leftovers of interrupted unpacks. Returns the layers removed.
    pub fn prune(&self, keep: &BTreeSet<Digest>) -> Result<Vec<Digest>> {
        let mut used = keep.clone();
        for id in self.containers()? {
            if let Ok(chain) = self.layers_of(&id) {
                used.extend(chain);
            }
        }
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
            let e = e.map_err(io_err(format!("read {}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".tmp-") {
                let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    remove_all(&e.path())?;
                }
            }
        }
        let mut removed = Vec::new();
        for l in self.layers()? {
            if !used.contains(&l) {
                remove_all(&self.layer_dir(&l))?;
                removed.push(l);
            }
        }
        Ok(removed)
    }
}

/// A directory that will be a container's `/`: root-owned, 0755 (whatever the umask).
fn mkdir_root(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    mkdir_all(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", p.display())))
}

fn mkdir_all(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err(format!("create {}", p.display())))
}

/// Removes a tree that may hold read-only directories (layers keep their image modes).
fn remove_all(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", p.display()))(e)),
    }
}

#[cfg(test)]
mod tests;
