//! The stores every front end opens under one root, and the image look-up, pull and
//! garbage collection they share.
//!
//! ```text
//! <root>/content/      blobs (berth-image's content store)
//! <root>/images.json   names and manifests
//! <root>/snapshots/    unpacked layers and each container's root file system
//! <root>/containers/   berthctl's container records
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::images::{ImageError, ImageRecord};
use berth_image::registry::{
    AuthStore, ImageName, Platform, Progress, PullOptions, Puller, RegistriesConfig,
};
use berth_image::snapshot::{Driver, Snapshotter};
use berth_image::{builtin, ContentStore, Digest, ImageStore};

use crate::records::Records;
use crate::{Error, Result};

/// Where the stores live and how they behave.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Images, snapshots and records.
    pub root: PathBuf,
    /// The runtime's state (libberth's `--root`).
    pub runroot: PathBuf,
    /// The snapshot driver; detected when `None`.
    pub driver: Option<Driver>,
    /// The most one layer may unpack to.
    pub max_layer_size: u64,
    /// The registries config (mirrors, short names, insecure registries).
    pub registries_conf: PathBuf,
}

/// When a front end pulls an image it is asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when no local image has the name.
    Missing,
    Always,
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<PullPolicy> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(Error::InvalidArgument {
                what: "pull policy",
                value: other.to_string(),
                reason: "use missing, always or never".into(),
            }),
        }
    }
}

pub struct Store {
    pub root: PathBuf,
    pub content: ContentStore,
    pub images: ImageStore,
    pub snapshots: Snapshotter,
    pub records: Records,
    pub runtime: libberth::Runtime,
    pub registries_conf: PathBuf,
}

impl Store {
    pub fn open(o: &StoreOptions) -> Result<Store> {
        let root = o.root.clone();
        let content = ContentStore::open(&root.join("content"))?;
        let images = ImageStore::open(&root)?;
        let snapshots = Snapshotter::open(&root.join("snapshots"), o.driver)?
            .with_max_layer_size(o.max_layer_size);
        let records = Records::open(&root.join("containers"))?;
        Ok(Store {
            root,
            content,
            images,
            snapshots,
            records,
            runtime: libberth::Runtime {
                root: o.runroot.clone(),
                systemd_cgroup: false,
                rootless: false,
            },
            registries_conf: o.registries_conf.clone(),
        })
    }

    /// Full names a short `name` may stand for: a local image first (`localhost/name`, as
    /// podman resolves it), then the registries config's search list. Empty for a fully
    /// qualified name or when the config cannot say.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !ImageName::is_fully_qualified(name) && !name.contains('@') {
            let tagged = if name.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                name.to_string()
            } else {
                format!("{name}:latest")
            };
            out.push(format!("localhost/{tagged}"));
        }
        out.extend(registry_candidates(&self.registries_conf, name));
        out
    }

    /// A local image, the built-in one made on first use.
    pub fn find_local(&self, name: &str) -> Result<Option<ImageRecord>> {
        match self.images.find(name, &self.candidates(name)) {
            Ok(r) => Ok(Some(r)),
            Err(ImageError::NotFound(_)) => {
                if builtin::is_builtin(name) {
                    return self.make_builtin().map(Some);
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A local image or an error saying it is not here.
    pub fn image(&self, name: &str) -> Result<ImageRecord> {
        self.find_local(name)?
            .ok_or_else(|| Error::ImageNotFound(name.to_string()))
    }

    fn make_builtin(&self) -> Result<ImageRecord> {
        let _hold = self.images.hold_for_write()?;
        let busybox = builtin::find_busybox()?;
        let fetched = builtin::build(&self.content, &busybox)?;
        Ok(self.images.add(&self.content, &fetched, &[])?)
    }

    /// Pulls `name` for `platform` (the host's when `None`) and records and unpacks it, so
    /// that a container of it starts at once. `auth` defaults to the credentials files.
    /// The tokio runtime lives only for the pull when the caller has none, so no thread of
    /// it remains when a container is cloned from this process afterwards.
    pub fn pull(
        &self,
        name: &str,
        platform: Option<Platform>,
        auth: Option<AuthStore>,
        progress: Arc<dyn Progress>,
    ) -> Result<(ImageRecord, usize)> {
        let config = RegistriesConfig::load(&self.registries_conf)?;
        let opts = PullOptions {
            platform: platform.unwrap_or_else(Platform::host),
            ..PullOptions::default()
        };
        let puller = Puller::new(
            self.content.clone(),
            config,
            auth.unwrap_or_else(AuthStore::from_env),
        );
        let _hold = self.images.hold_for_write()?;
        let fetched = match tokio::runtime::Handle::try_current() {
            // Inside an async caller (berthd): this thread may block, the runtime runs on.
            Ok(h) => tokio::task::block_in_place(|| h.block_on(puller.pull(name, &opts, progress))),
            Err(_) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .enable_all()
                    .build()
                    .map_err(crate::io_ctx("start the async runtime"))?;
                let f = rt.block_on(puller.pull(name, &opts, progress));
                drop(rt);
                f
            }
        }?;
        let record = self.images.add(&self.content, &fetched, &[])?;
        let unpacked = self.snapshots.unpack(&self.content, &record)?;
        self.images.record_layer_sizes(&unpacked.sizes)?;
        Ok((record, unpacked.unpacked))
    }

    /// Deletes blobs no image references and layers no image or container uses.
    /// Returns (blobs, layers) removed.
    pub fn collect_garbage(&self) -> Result<(usize, usize)> {
        let _gc = self.images.hold_for_gc()?;
        let images = self.images.list()?;
        let keep: BTreeSet<Digest> = images
            .iter()
            .flat_map(|i| i.blobs().cloned().collect::<Vec<_>>())
            .collect();
        let mut blobs = 0;
        for b in self.content.list()? {
            if !keep.contains(&b) && self.content.delete(&b)? {
                blobs += 1;
            }
        }
        let chains: BTreeSet<Digest> = images.iter().flat_map(|i| i.chain()).collect();
        let layers = self.snapshots.prune(&chains)?.len();
        // VM mode's disk images of layers go with the layers.
        let left: BTreeSet<Digest> = self.snapshots.layers()?.into_iter().collect();
        berth_microvm::layers::LayerImages::new(self.vm_dir().join("layers"))
            .prune(&left)
            .map_err(|e| Error::Io {
                context: format!("prune {}", self.vm_dir().join("layers").display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok((blobs, layers))
    }

    /// VM mode's files: the guest initramfs and the layers' disk images (docs/vm.md).
    pub fn vm_dir(&self) -> PathBuf {
        self.root.join("vm")
    }

    /// The image config of a stored image.
    pub fn image_config(&self, img: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let raw = self.content.read(&img.id)?;
        serde_json::from_slice(&raw).map_err(|e| Error::ImageConfig {
            image: img.short_id().to_string(),
            reason: format!("parse its config: {e}"),
        })
    }

    /// The containers that use `img`: berthctl's by their records, and any other
    /// front end's (berthd's pods) by a root file system made from exactly its layers.
    pub fn users_of(&self, img: &ImageRecord) -> Result<Vec<String>> {
        let mut users: Vec<String> = self
            .records
            .list()?
            .into_iter()
            .filter(|r| r.image_id == img.id)
            .map(|r| r.name)
            .collect();
        let chain = img.chain();
        for id in self.snapshots.containers()? {
            if self.records.dir(&id).exists() {
                continue;
            }
            if self.snapshots.layers_of(&id).is_ok_and(|c| c == chain) {
                users.push(id);
            }
        }
        Ok(users)
    }

    /// Fails when a container still uses the image.
    pub fn check_unused(&self, img: &ImageRecord) -> Result<()> {
        let users = self.users_of(img)?;
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::ImageInUse {
            image: img.short_id().to_string(),
            users: users.join(", "),
        })
    }
}

/// Short-name candidates (full names) from the registries config at `conf`.
pub fn registry_candidates(conf: &Path, name: &str) -> Vec<String> {
    RegistriesConfig::load(conf)
        .ok()
        .and_then(|c| c.candidates(name).ok())
        .map(|v| v.into_iter().map(|n| n.to_string()).collect())
        .unwrap_or_default()
}
