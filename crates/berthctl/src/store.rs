//! The stores berthctl works on, opened from the global flags, and the image look-up and
//! garbage collection that several commands share.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_image::images::ImageRecord;
use berth_image::snapshot::{Driver, Snapshotter};
use berth_image::{builtin, ContentStore, Digest, ImageStore};

use crate::cli::Cli;
use crate::containers::Records;

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
    pub fn open(cli: &Cli) -> Result<Store> {
        let driver = match cli.storage_driver.as_deref() {
            None => None,
            Some(s) => Some(
                Driver::parse(s)
                    .with_context(|| format!("--storage-driver {s:?}: use overlay or copy"))?,
            ),
        };
        let root = cli.root.clone();
        let content = ContentStore::open(&root.join("content"))
            .with_context(|| format!("open the content store under {}", root.display()))?;
        let images = ImageStore::open(&root)?;
        let max_layer = crate::run::parse_size("--max-layer-size", &cli.max_layer_size)?;
        let snapshots = Snapshotter::open(&root.join("snapshots"), driver)?
            .with_max_layer_size(max_layer as u64);
        let records = Records::open(&root.join("containers"))?;
        Ok(Store {
            root,
            content,
            images,
            snapshots,
            records,
            runtime: libberth::Runtime {
                root: cli.runroot.clone(),
                systemd_cgroup: false,
                rootless: false,
            },
            registries_conf: cli.registries_conf.clone(),
        })
    }

    /// Short-name candidates for `name` from the registries config (empty when the name
    /// is fully qualified or the config cannot say).
    /// Local images come first: `name` may be `localhost/name`, as podman resolves it.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !berth_image::registry::ImageName::is_fully_qualified(name) && !name.contains('@') {
            let tagged = if name.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                name.to_string()
            } else {
                format!("{name}:latest")
            };
            out.push(format!("localhost/{tagged}"));
        }
        out.extend(crate::pull::candidates(&self.registries_conf, name));
        out
    }

    /// A local image, the built-in one made on first use.
    pub fn find_local(&self, name: &str) -> Result<Option<ImageRecord>> {
        match self.images.find(name, &self.candidates(name)) {
            Ok(r) => Ok(Some(r)),
            Err(berth_image::images::ImageError::NotFound(_)) => {
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
            .with_context(|| format!("image {name:?} is not known (berthctl images lists them)"))
    }

    fn make_builtin(&self) -> Result<ImageRecord> {
        let _hold = self.images.hold_for_write()?;
        let busybox = builtin::find_busybox()?;
        let fetched = builtin::build(&self.content, &busybox)?;
        Ok(self.images.add(&self.content, &fetched, &[])?)
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
        Ok((blobs, layers))
    }

    /// The image config of a stored image.
    pub fn image_config(&self, img: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let raw = self.content.read(&img.id)?;
        serde_json::from_slice(&raw)
            .with_context(|| format!("image {}: parse config", img.short_id()))
    }

    /// Fails when a container still uses the image.
    pub fn check_unused(&self, img: &ImageRecord) -> Result<()> {
        let users: Vec<String> = self
            .records
            .list()?
            .into_iter()
            .filter(|r| r.image_id == img.id)
            .map(|r| r.name)
            .collect();
        if !users.is_empty() {
            bail!(
                "image {} is used by container(s) {}: remove them first, or use --force",
                img.short_id(),
                users.join(", ")
            );
        }
        Ok(())
    }
}
