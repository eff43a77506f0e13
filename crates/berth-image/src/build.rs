//! Building images locally, without a registry: deterministic layer tars and the config and
//! manifest that tie them together. The built-in busybox image is made this way, and tests
//! use it to make images with exactly the layers they need.

use std::io;

use oci_spec::image::{
    Config, ConfigBuilder, DescriptorBuilder, ImageConfiguration, ImageConfigurationBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, RootFsBuilder,
};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Algorithm, Digest};
use crate::FetchedImage;

/// A layer tar written in memory with fixed ownership (0:0) and mtime, so the same input
/// gives the same digest.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
            mtime: 0,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(&mut h, path, io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(self)
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> io::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data)?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(self)
    }

    /// An AUFS-style whiteout: `dir/.wh.name` hides `dir/name` of the layers below.
    pub fn whiteout(&mut self, path: &str) -> io::Result<&mut Self> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, b"")
    }

    /// Marks `dir` opaque: nothing of it from the layers below shows.
    pub fn opaque(&mut self, dir: &str) -> io::Result<&mut Self> {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// The finished, uncompressed tar.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.tar.into_inner()
    }
}

/// Errors while storing a built image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("build image: {0}")]
    Spec(String),
    #[error(transparent)]
    Content(#[from] ContentError),
}

/// A layer blob already in the content store.
#[derive(Debug, Clone)]
pub struct StoredLayer {
    pub digest: Digest,
    pub size: u64,
    /// Its OCI media type (tar, tar+gzip, tar+zstd).
    pub media_type: MediaType,
    /// The digest of its uncompressed tar.
    pub diff_id: Digest,
}

/// Stores `layers` (uncompressed tars, bottom first), a config made from `config`, and a
/// manifest in `content`; returns the image as a pull would.
pub fn store_image(
    content: &ContentStore,
    name: Option<String>,
    layers: &[Vec<u8>],
    config: Config,
    architecture: &str,
) -> Result<FetchedImage, BuildError> {
    let mut stored = Vec::new();
    for l in layers {
        let d = Digest::of(Algorithm::Sha256, l);
        content.put(&d, l)?;
        stored.push(StoredLayer {
            digest: d.clone(),
            size: l.len() as u64,
            media_type: MediaType::ImageLayer,
            diff_id: d,
        });
    }
    store_image_of(content, name, &stored, config, architecture)
}

/// Stores a config made from `config` and a manifest for `layers` (in the content store
/// already, bottom first); returns the image as a pull would.
pub fn store_image_of(
    content: &ContentStore,
    name: Option<String>,
    layers: &[StoredLayer],
    config: Config,
    architecture: &str,
) -> Result<FetchedImage, BuildError> {
    let spec = |e: oci_spec::OciSpecError| BuildError::Spec(e.to_string());
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for l in layers {
        diff_ids.push(l.diff_id.to_string());
        descriptors.push(
            DescriptorBuilder::default()
                .media_type(l.media_type.clone())
                .digest(oci_digest(&l.digest)?)
                .size(l.size)
                .build()
                .map_err(spec)?,
        );
    }
    let image_config: ImageConfiguration = ImageConfigurationBuilder::default()
        .architecture(architecture)
        .os("linux")
        .created("1970-01-01T00:00:00Z")
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .map_err(spec)?,
        )
        .build()
        .map_err(spec)?;
    let config_bytes =
        serde_json::to_vec(&image_config).map_err(|e| BuildError::Spec(e.to_string()))?;
    let config_digest = Digest::of(Algorithm::Sha256, &config_bytes);
    content.put(&config_digest, &config_bytes)?;
    let manifest: ImageManifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(oci_digest(&config_digest)?)
                .size(config_bytes.len() as u64)
                .build()
                .map_err(spec)?,
        )
        .layers(descriptors)
        .build()
        .map_err(spec)?;
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| BuildError::Spec(e.to_string()))?;
    let manifest_digest = Digest::of(Algorithm::Sha256, &manifest_bytes);
    content.put(&manifest_digest, &manifest_bytes)?;
    Ok(FetchedImage {
        name,
        manifest_digest,
        manifest,
    })
}

/// A config with just a command and the usual PATH.
pub fn simple_config(cmd: &[&str]) -> Config {
    let mut c = ConfigBuilder::default()
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])
        .build()
        .unwrap_or_default();
    c.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
    c
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, BuildError> {
    d.to_string()
        .parse()
        .map_err(|e: oci_spec::OciSpecError| BuildError::Spec(e.to_string()))
}
