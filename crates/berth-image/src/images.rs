//! Image metadata: which names point at which manifest, and what Berth needs to run an
//! image without re-reading its manifest and config (layers, diffIDs, chain IDs).
//!
//! The store is one JSON document, `<root>/images.json`, replaced atomically
//! ([`crate::fsutil::write_atomic`]) under an exclusive flock on `<root>/images.lock`, so a
//! crash mid-write leaves the previous version and concurrent commands serialise. A name
//! (`registry/repository:tag`) belongs to one image at a time: adding or tagging an image
//! with a name another image holds moves it, as `docker tag` and `podman tag` do.
//!
//! Garbage collection takes `<root>/gc.lock` exclusively; a pull or import holds it shared
//! from its first blob until its record is written ([`ImageStore::hold_for_write`]), so a
//! prune never deletes blobs that an image is about to reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Algorithm, Digest};
use crate::fsutil::{now_secs, write_atomic};
use crate::FetchedImage;

/// Errors of the metadata store; each names the image or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: {cause}")]
    Corrupt { file: PathBuf, cause: String },
    #[error("image {0:?} is not known")]
    NotFound(String),
    #[error("{query:?} matches more than one image: {matches}")]
    Ambiguous { query: String, matches: String },
    #[error("image {image}: {cause}")]
    BadImage { image: String, cause: String },
    #[error(transparent)]
    Content(#[from] ContentError),
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// One layer of an image, as stored and as unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob in the content store (compressed as it was pulled).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar, from the image config.
    pub diff_id: Digest,
    /// The identity of this layer stacked on those below it: what snapshots are named by.
    pub chain_id: Digest,
}

/// An image Berth knows, by its ID (the config digest, as podman and docker show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub layers: Vec<LayerRecord>,
    /// Manifest, config and layer blobs, in bytes.
    pub size: u64,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    /// When Berth stored it, in seconds since the epoch.
    pub added: u64,
}

impl ImageRecord {
    /// The chain IDs from the bottom layer up.
    pub fn chain(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }

    /// Every blob this image needs: manifest, config, layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.id]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }

    /// The short ID users see (12 hex digits).
    pub fn short_id(&self) -> &str {
        &self.id.hex()[..12.min(self.id.hex().len())]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Db {
    version: u32,
    images: Vec<ImageRecord>,
    /// Bytes of each layer's uncompressed tar, by diffID, once known (from an unpack, or
    /// counted for `images`): what podman shows as an image's size.
    #[serde(default)]
    layer_sizes: BTreeMap<Digest, u64>,
}

const DB_VERSION: u32 = 1;

/// The metadata store under one root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// Held while a pull or import adds blobs and then its record (shared), or while garbage is
/// collected (exclusive).
pub struct GcGuard(#[allow(dead_code)] Flock<File>);

impl ImageStore {
    /// Opens (creating if needed, mode 0700) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(format!("create {}", root.display())))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    fn db_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.root.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        Flock::lock(f, arg).map_err(|(_, e)| ImageError::Io {
            context: format!("lock {}", path.display()),
            source: e.into(),
        })
    }

    /// See the module doc: taken shared by writers of new images.
    pub fn hold_for_write(&self) -> Result<GcGuard> {
        self.flock("gc.lock", FlockArg::LockShared).map(GcGuard)
    }

    /// Taken exclusively by garbage collection.
    pub fn hold_for_gc(&self) -> Result<GcGuard> {
        self.flock("gc.lock", FlockArg::LockExclusive).map(GcGuard)
    }

    fn load(&self) -> Result<Db> {
        let path = self.db_path();
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Db::default()),
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        let db: Db = serde_json::from_slice(&data).map_err(|e| ImageError::Corrupt {
            file: path.clone(),
            cause: e.to_string(),
        })?;
        if db.version > DB_VERSION {
            return Err(ImageError::Corrupt {
                file: path,
                cause: format!(
                    "written by a newer Berth (version {}, this one reads {DB_VERSION})",
                    db.version
                ),
            });
        }
        Ok(db)
    }

    fn save(&self, db: &mut Db) -> Result<()> {
        db.version = DB_VERSION;
        let data = serde_json::to_vec_pretty(db).map_err(|e| ImageError::Corrupt {
            file: self.db_path(),
            cause: e.to_string(),
        })?;
        let path = self.db_path();
        write_atomic(&path, &data, 0o600).map_err(io_err(format!("write {}", path.display())))
    }

    /// Runs `f` on the document under the lock and saves what it leaves.
    fn update<T>(&self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let _lock = self.flock("images.lock", FlockArg::LockExclusive)?;
        let mut db = self.load()?;
        let out = f(&mut db)?;
        self.save(&mut db)?;
        Ok(out)
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let _lock = self.flock("images.lock", FlockArg::LockShared)?;
        let mut images = self.load()?.images;
        images.sort_by(|a, b| b.added.cmp(&a.added).then(a.id.hex().cmp(b.id.hex())));
        Ok(images)
    }

    /// Records an image whose blobs are in `content`, under `fetched.name` (if any) and
    /// `extra_names`. Reads its config to learn diffIDs and platform; a layer count that
    /// differs from the config's diffIDs is refused.
    pub fn add(
        &self,
        content: &ContentStore,
        fetched: &FetchedImage,
        extra_names: &[String],
    ) -> Result<ImageRecord> {
        let label = fetched
            .name
            .clone()
            .unwrap_or_else(|| fetched.manifest_digest.to_string());
        let mut record = describe(content, &label, &fetched.manifest_digest, &fetched.manifest)?;
        let names: Vec<String> = fetched.name.iter().chain(extra_names).cloned().collect();
        self.update(|db| {
            for n in &names {
                for other in db.images.iter_mut() {
                    other.names.retain(|x| x != n);
                }
            }
            if let Some(existing) = db.images.iter_mut().find(|i| i.id == record.id) {
                for n in &names {
                    if !existing.names.contains(n) {
                        existing.names.push(n.clone());
                    }
                }
                // A newer manifest for the same config (re-compressed layers) replaces it.
                existing.manifest_digest = record.manifest_digest.clone();
                existing.manifest_media_type = record.manifest_media_type.clone();
                existing.layers = record.layers.clone();
                existing.size = record.size;
                record = existing.clone();
            } else {
                record.names = names.clone();
                db.images.push(record.clone());
            }
            Ok(record)
        })
    }

    /// Finds the image `query` names: a full name (`:latest` implied), one of `candidates`
    /// (the caller's short-name expansion, in order), an ID or unique ID prefix (at least 3
    /// hex digits, `sha256:` optional), or a manifest digest.
    pub fn find(&self, query: &str, candidates: &[String]) -> Result<ImageRecord> {
        let images = self.list()?;
        find_in(&images, query, candidates)
    }

    /// Adds `name` to the image `query` finds (taking it from any other image).
    pub fn tag(&self, query: &str, candidates: &[String], name: &str) -> Result<ImageRecord> {
        let target = self.find(query, candidates)?;
        self.update(|db| {
            for other in db.images.iter_mut() {
                other.names.retain(|x| x != name);
            }
            let img = db
                .images
                .iter_mut()
                .find(|i| i.id == target.id)
                .ok_or_else(|| ImageError::NotFound(query.to_string()))?;
            img.names.push(name.to_string());
            Ok(img.clone())
        })
    }

    /// Removes one name from its image; the image stays (maybe nameless). Returns the image.
    pub fn untag(&self, name: &str) -> Result<ImageRecord> {
        self.update(|db| {
            let img = db
                .images
                .iter_mut()
                .find(|i| i.names.iter().any(|n| n == name))
                .ok_or_else(|| ImageError::NotFound(name.to_string()))?;
            img.names.retain(|n| n != name);
            Ok(img.clone())
        })
    }

    /// Drops the image record with `id` (blobs stay until garbage collection).
    pub fn remove(&self, id: &Digest) -> Result<ImageRecord> {
        self.update(|db| {
            let pos = db
                .images
                .iter()
                .position(|i| &i.id == id)
                .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
            let gone = db.images.remove(pos);
            let live: BTreeSet<&Digest> = db
                .images
                .iter()
                .flat_map(|i| i.layers.iter().map(|l| &l.diff_id))
                .collect();
            db.layer_sizes.retain(|d, _| live.contains(d));
            Ok(gone)
        })
    }

    /// Records the uncompressed sizes of layers, by diffID (an unpack learns them).
    pub fn record_layer_sizes(&self, sizes: &[(Digest, u64)]) -> Result<()> {
        if sizes.is_empty() {
            return Ok(());
        }
        self.update(|db| {
            db.layer_sizes.extend(sizes.iter().cloned());
            Ok(())
        })
    }

    /// Each image's unpacked size: the bytes of its layers' uncompressed tars, what podman
    /// shows as SIZE. Sizes not known yet are counted by decompressing the layer blob (a
    /// stream, nothing held) and recorded.
    pub fn unpacked_sizes(
        &self,
        content: &ContentStore,
        images: &[ImageRecord],
    ) -> Result<Vec<u64>> {
        let known = {
            let _lock = self.flock("images.lock", FlockArg::LockShared)?;
            self.load()?.layer_sizes
        };
        let mut found = BTreeMap::new();
        for l in images.iter().flat_map(|i| &i.layers) {
            if known.contains_key(&l.diff_id) || found.contains_key(&l.diff_id) {
                continue;
            }
            let blob = content.open_blob(&l.digest)?;
            let mut plain = crate::unpack::decompressed(io::BufReader::new(blob))
                .map_err(io_err(format!("read layer {}", l.digest)))?;
            let n = io::copy(&mut plain, &mut io::sink())
                .map_err(io_err(format!("read layer {}", l.digest)))?;
            found.insert(l.diff_id.clone(), n);
        }
        if !found.is_empty() {
            let list: Vec<(Digest, u64)> = found.clone().into_iter().collect();
            self.record_layer_sizes(&list)?;
        }
        Ok(images
            .iter()
            .map(|i| {
                i.layers
                    .iter()
                    .map(|l| {
                        known
                            .get(&l.diff_id)
                            .or(found.get(&l.diff_id))
                            .copied()
                            .unwrap_or(0)
                    })
                    .sum()
            })
            .collect())
    }

    /// Every blob some image references.
    pub fn referenced_blobs(&self) -> Result<BTreeSet<Digest>> {
        Ok(self
            .list()?
            .iter()
            .flat_map(|i| i.blobs().cloned().collect::<Vec<_>>())
            .collect())
    }
}

fn find_in(images: &[ImageRecord], query: &str, candidates: &[String]) -> Result<ImageRecord> {
    let by_name = |n: &str| images.iter().find(|i| i.names.iter().any(|x| x == n));
    let mut names = vec![query.to_string()];
    if !has_tag_or_digest(query) {
        names.push(format!("{query}:latest"));
    }
    names.extend(candidates.iter().cloned());
    for n in &names {
        if let Some(i) = by_name(n) {
            return Ok(i.clone());
        }
    }
    if let Ok(d) = query.parse::<Digest>() {
        if let Some(i) = images.iter().find(|i| i.id == d || i.manifest_digest == d) {
            return Ok(i.clone());
        }
    }
    // `name@sha256:...`: the digest decides.
    if let Some((_, d)) = query.rsplit_once('@') {
        if let Ok(d) = d.parse::<Digest>() {
            if let Some(i) = images.iter().find(|i| i.manifest_digest == d) {
                return Ok(i.clone());
            }
        }
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.len() >= 3
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        let matches: Vec<&ImageRecord> = images
            .iter()
            .filter(|i| i.id.hex().starts_with(hex))
            .collect();
        match matches.len() {
            0 => {}
            1 => return Ok(matches[0].clone()),
            _ => {
                return Err(ImageError::Ambiguous {
                    query: query.to_string(),
                    matches: matches
                        .iter()
                        .map(|i| i.short_id())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
    Err(ImageError::NotFound(query.to_string()))
}

/// True when a reference ends in `:tag` (a colon after the last slash) or has `@digest`.
fn has_tag_or_digest(name: &str) -> bool {
    name.contains('@')
        || name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// Reads the config of `manifest` and builds the record (without names).
pub fn describe(
    content: &ContentStore,
    label: &str,
    manifest_digest: &Digest,
    manifest: &ImageManifest,
) -> Result<ImageRecord> {
    let bad = |cause: String| ImageError::BadImage {
        image: label.to_string(),
        cause,
    };
    let config_digest: Digest = manifest
        .config()
        .digest()
        .to_string()
        .parse()
        .map_err(|e| bad(format!("config digest: {e}")))?;
    let raw = content.read(&config_digest)?;
    if raw.len() as u64 > crate::MAX_CONFIG {
        return Err(bad(format!(
            "config is {} bytes, over the limit",
            raw.len()
        )));
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("config {config_digest}: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(format!(
            "the manifest has {} layers, the config {} diffIDs",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    let mut parent: Option<Digest> = None;
    let mut size = manifest.config().size() + manifest_size(content, manifest_digest);
    for (l, d) in manifest.layers().iter().zip(diff_ids) {
        let diff_id: Digest = d.parse().map_err(|e| bad(format!("diffID {d}: {e}")))?;
        let chain_id = chain_id(parent.as_ref(), &diff_id);
        layers.push(LayerRecord {
            digest: l
                .digest()
                .to_string()
                .parse()
                .map_err(|e| bad(format!("layer digest: {e}")))?,
            size: l.size(),
            media_type: l.media_type().to_string(),
            diff_id,
            chain_id: chain_id.clone(),
        });
        size += l.size();
        parent = Some(chain_id);
    }
    Ok(ImageRecord {
        id: config_digest,
        names: Vec::new(),
        manifest_digest: manifest_digest.clone(),
        manifest_media_type: manifest
            .media_type()
            .as_ref()
            .unwrap_or(&MediaType::ImageManifest)
            .to_string(),
        layers,
        size,
        created: config.created().clone(),
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        added: now_secs(),
    })
}

fn manifest_size(content: &ContentStore, d: &Digest) -> u64 {
    fs::metadata(content.blob_path(d))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The image-spec chain ID: the diffID for the bottom layer, then
/// `sha256(parent_chain + " " + diffID)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(Algorithm::Sha256, format!("{p} {diff_id}").as_bytes()),
    }
}

#[cfg(test)]
mod tests;
