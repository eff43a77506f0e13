//! The CRI ImageService on berth-engine's store (shared with berthctl).

use std::sync::Arc;

use berth_image::images::ImageRecord;
use berth_image::registry::{AuthStore, Progress};
use berth_image::Digest;
use k8s_cri::v1::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageSpec, Int64Value, UInt64Value,
};

use super::Engine;
use crate::error::{Error, Result};
use crate::state::now_ns;

/// Pulls report nothing: the kubelet waits for the reply.
struct Quiet;

impl Progress for Quiet {
    fn layer_start(&self, _: &Digest, _: u64, _: u64) {}
    fn layer_bytes(&self, _: &Digest, _: u64) {}
    fn layer_done(&self, _: &Digest, _: bool) {}
    fn note(&self, _: &str) {}
}

fn spec_name(spec: Option<&ImageSpec>) -> Result<&str> {
    spec.map(|s| s.image.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidArgument("image spec: image is empty".into()))
}

impl Engine {
    /// The CRI's view of a stored image.
    fn cri_image(&self, img: &ImageRecord) -> Image {
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for n in &img.names {
            match n.split_once('@') {
                Some(_) => digests.push(n.clone()),
                None => {
                    tags.push(n.clone());
                    let repo = n.rsplit_once(':').map_or(n.as_str(), |(r, t)| {
                        // A port, not a tag: "host:5000/x".
                        if t.contains('/') {
                            n.as_str()
                        } else {
                            r
                        }
                    });
                    let d = format!("{repo}@{}", img.manifest_digest);
                    if !digests.contains(&d) {
                        digests.push(d);
                    }
                }
            }
        }
        let user = self
            .store
            .image_config(img)
            .ok()
            .and_then(|c| c.config().as_ref().and_then(|c| c.user().clone()))
            .unwrap_or_default();
        let user_part = user.split(':').next().unwrap_or("");
        let (uid, username) = match user_part.parse::<i64>() {
            Ok(u) => (Some(Int64Value { value: u }), String::new()),
            Err(_) if user_part.is_empty() => (None, String::new()),
            Err(_) => (None, user_part.to_string()),
        };
        Image {
            id: img.id.to_string(),
            repo_tags: tags,
            repo_digests: digests,
            size: img.size,
            uid,
            username,
            spec: Some(ImageSpec {
                image: img.id.to_string(),
                ..Default::default()
            }),
            pinned: berth_image::builtin::is_builtin(img.names.first().map_or("", |s| s)),
        }
    }

    pub fn list_images(&self, filter: Option<&ImageSpec>) -> Result<Vec<Image>> {
        let wanted = match filter.map(|s| s.image.as_str()).filter(|s| !s.is_empty()) {
            Some(name) => match self.store.find_local(name)? {
                Some(i) => Some(i.id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        Ok(self
            .store
            .images
            .list()?
            .iter()
            .filter(|i| wanted.as_ref().map_or(true, |w| &i.id == w))
            .map(|i| self.cri_image(i))
            .collect())
    }

    /// None when the image is not here (not an error, as the CRI says).
    pub fn image_status(&self, spec: Option<&ImageSpec>) -> Result<Option<Image>> {
        let name = spec_name(spec)?;
        Ok(self.store.find_local(name)?.map(|i| self.cri_image(&i)))
    }

    /// Pulls with the kubelet's credentials, if any; returns the image ID.
    pub fn pull_image(
        &self,
        spec: Option<&ImageSpec>,
        auth: Option<&AuthConfig>,
    ) -> Result<String> {
        let name = spec_name(spec)?;
        let mut store = AuthStore::from_env();
        if let Some(a) = auth {
            if !a.username.is_empty() {
                store = store.with_credentials(&a.username, &a.password);
            } else if !a.auth.is_empty() {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.auth.trim())
                    .map_err(|e| Error::InvalidArgument(format!("auth.auth: not base64: {e}")))?;
                let s = String::from_utf8(raw)
                    .map_err(|_| Error::InvalidArgument("auth.auth: not UTF-8".into()))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| Error::InvalidArgument("auth.auth: not user:password".into()))?;
                store = store.with_credentials(u, p);
            } else if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
                return Err(Error::Unimplemented(format!(
                    "image {name:?}: identity and registry tokens are not supported yet; \
                     give a user name and password"
                )));
            }
        }
        let (img, _) = self
            .store
            .pull(name, None, Some(store), Arc::new(Quiet))
            .map_err(|e| match e {
                berth_engine::Error::Pull(p) => {
                    Error::Internal(format!("pull {name:?}: {}", crate::error::chain(&p)))
                }
                other => other.into(),
            })?;
        Ok(img.id.to_string())
    }

    /// Removes the image (all its names) unless a container uses it; gone is fine.
    pub fn remove_image(&self, spec: Option<&ImageSpec>) -> Result<()> {
        let name = spec_name(spec)?;
        let Some(img) = self.store.find_local(name)? else {
            return Ok(());
        };
        self.store.check_unused(&img)?;
        self.store.images.remove(&img.id)?;
        self.store.collect_garbage()?;
        Ok(())
    }

    /// What images take on disk: blobs and unpacked layers, bytes (allocated blocks) and
    /// inodes, walked without following links.
    pub fn image_fs_info(&self) -> Result<Vec<FilesystemUsage>> {
        let mut bytes = 0u64;
        let mut inodes = 0u64;
        for dir in [
            self.store.root.join("content"),
            self.store.root.join("snapshots").join("layers"),
        ] {
            super::stats::du(&dir, &mut bytes, &mut inodes);
        }
        Ok(vec![FilesystemUsage {
            timestamp: now_ns(),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.store.root.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        }])
    }
}
