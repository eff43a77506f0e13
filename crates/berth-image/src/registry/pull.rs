//! Pulling one image: resolve the name, fetch the manifest (picking a platform from an
//! index), then the config and the layers, several at once, each streamed into the content
//! store, resumed after a failure and retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::auth::{AuthError, AuthStore};
use super::config::{ConfigError, Endpoint, RegistriesConfig};
use super::reference::ImageName;
use crate::content::{ContentError, ContentStore};
use crate::digest::{Algorithm, Digest};
use crate::platform::{self, Platform};
use crate::FetchedImage;

/// Hears how a pull goes (a progress bar, plain lines, or nothing).
pub trait Progress: Send + Sync {
    fn layer_start(&self, digest: &Digest, size: u64, resumed_from: u64);
    fn layer_bytes(&self, digest: &Digest, total_so_far: u64);
    fn layer_done(&self, digest: &Digest, already_present: bool);
    fn note(&self, message: &str);
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// Blobs fetched at once.
    pub max_concurrent: usize,
    /// Retries of a transient failure (connection lost, 5xx), with doubling backoff.
    pub retries: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            max_concurrent: 4,
            retries: 3,
        }
    }
}

/// Why a pull failed; one line each, naming the image and, where there is one, the blob
/// or registry.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("image {image} not found in registry {registry}")]
    NotFound { image: String, registry: String },
    #[error(
        "image {image}: registry {registry} refused the credentials (or gave no access): {cause}"
    )]
    Unauthorized {
        image: String,
        registry: String,
        cause: String,
    },
    #[error("image {image}: registry {registry} is unreachable: {cause}")]
    Unreachable {
        image: String,
        registry: String,
        cause: String,
    },
    #[error("image {image}: blob {blob}: {cause}")]
    Blob {
        image: String,
        blob: String,
        cause: String,
    },
    #[error("image {image}: {what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        image: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("image {image}: unsupported {what} media type {media_type:?}")]
    MediaType {
        image: String,
        what: &'static str,
        media_type: String,
    },
    #[error("image {image}: {cause}")]
    Bad { image: String, cause: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

const MAX_MANIFEST: u64 = 4 << 20;
const MAX_CONFIG: u64 = 8 << 20;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Pulls images into a content store.
pub struct Puller {
    store: ContentStore,
    config: RegistriesConfig,
    auth: AuthStore,
}

/// One endpoint with its client, reference and credentials.
struct Source {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    host: String,
}

enum Failure {
    /// Try the next endpoint or scheme (connection refused, TLS failure, a mirror's 404).
    Next(PullError),
    /// Stop here.
    Stop(PullError),
}

impl Puller {
    pub fn new(store: ContentStore, config: RegistriesConfig, auth: AuthStore) -> Puller {
        super::init_tls();
        Puller {
            store,
            config,
            auth,
        }
    }

    fn client(&self, e: &Endpoint, http: bool, opts: &PullOptions) -> Client {
        let extra = self
            .config
            .ca_certs(&e.host)
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
            .collect();
        Client::new(ClientConfig {
            protocol: if http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: e.insecure,
            extra_root_certificates: extra,
            platform_resolver: None,
            max_concurrent_download: opts.max_concurrent,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        })
    }

    /// Pulls `name` (short names resolved through the config's search registries).
    pub async fn pull(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<FetchedImage, PullError> {
        let candidates = self.config.candidates(name)?;
        let last = candidates.len() - 1;
        for (i, cand) in candidates.into_iter().enumerate() {
            match self.pull_one(&cand, opts, progress.clone()).await {
                // A short name: the next search registry may have it.
                Err(e @ (PullError::NotFound { .. } | PullError::Unreachable { .. }))
                    if i < last =>
                {
                    progress.note(&format!("{e}; trying the next search registry"));
                    continue;
                }
                other => return other,
            }
        }
        Err(PullError::Bad {
            image: name.to_string(),
            cause: "no registry to search".into(),
        })
    }

    async fn pull_one(
        &self,
        name: &ImageName,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<FetchedImage, PullError> {
        let image = name.to_string();
        let endpoints = self.config.endpoints(name)?;
        let mut last_err = None;
        for e in &endpoints {
            let creds = self.auth.credentials(&e.host)?;
            let auth = match creds {
                Some((u, p)) => RegistryAuth::Basic(u, p),
                None => RegistryAuth::Anonymous,
            };
            let schemes: &[bool] = if e.insecure { &[false, true] } else { &[false] };
            for &http in schemes {
                let reference = match (&name.tag_or_latest(), &name.digest) {
                    (_, Some(d)) => {
                        Reference::with_digest(e.host.clone(), e.repository.clone(), d.to_string())
                    }
                    (Some(t), None) => {
                        Reference::with_tag(e.host.clone(), e.repository.clone(), t.to_string())
                    }
                    (None, None) => unreachable!("a name without tag has a digest"),
                };
                let src = Source {
                    client: self.client(e, http, opts),
                    reference,
                    auth: auth.clone(),
                    host: e.host.clone(),
                };
                match self
                    .try_source(&src, name, &image, opts, progress.clone())
                    .await
                {
                    Ok(f) => return Ok(f),
                    Err(Failure::Stop(err)) => return Err(err),
                    Err(Failure::Next(err)) => {
                        if e.mirror {
                            progress
                                .note(&format!("mirror {}: {err}; trying the next source", e.host));
                        }
                        last_err = Some(err);
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| PullError::Bad {
            image,
            cause: "no endpoint".into(),
        }))
    }

    async fn try_source(
        &self,
        src: &Source,
        name: &ImageName,
        image: &str,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<FetchedImage, Failure> {
        let classify = |e: OciDistributionError, what: &str| classify(e, image, &src.host, what);
        let (bytes, _) = src
            .client
            .pull_manifest_raw(&src.reference, &src.auth, ACCEPT)
            .await
            .map_err(|e| classify(e, "manifest"))?;
        let (mut manifest_bytes, mut value) = self
            .check_manifest(image, &bytes, name.digest.as_ref())
            .map_err(Failure::Stop)?;
        let mut media = media_type(&value);
        if platform::INDEX_TYPES.contains(&media.as_str()) {
            let index_digest = Digest::of(Algorithm::Sha256, &manifest_bytes);
            self.store
                .put(&index_digest, &manifest_bytes)
                .map_err(|e| Failure::Stop(content_err(image, e)))?;
            let chosen = platform::select(&value, &opts.platform).map_err(|cause| {
                Failure::Stop(PullError::Bad {
                    image: image.to_string(),
                    cause,
                })
            })?;
            let d: Digest = chosen["digest"]
                .as_str()
                .unwrap_or("")
                .parse()
                .map_err(|e| {
                    Failure::Stop(PullError::Bad {
                        image: image.to_string(),
                        cause: format!("index entry digest: {e}"),
                    })
                })?;
            let by_digest = Reference::with_digest(
                src.reference.registry().to_string(),
                src.reference.repository().to_string(),
                d.to_string(),
            );
            let (b, _) = src
                .client
                .pull_manifest_raw(&by_digest, &src.auth, ACCEPT)
                .await
                .map_err(|e| classify(e, "manifest"))?;
            let (mb, v) = self
                .check_manifest(image, &b, Some(&d))
                .map_err(Failure::Stop)?;
            manifest_bytes = mb;
            value = v;
            media = media_type(&value);
        }
        if !platform::MANIFEST_TYPES.contains(&media.as_str()) {
            return Err(Failure::Stop(PullError::MediaType {
                image: image.to_string(),
                what: "manifest",
                media_type: media,
            }));
        }
        let manifest_digest = Digest::of(Algorithm::Sha256, &manifest_bytes);
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| {
                Failure::Stop(PullError::Bad {
                    image: image.to_string(),
                    cause: format!("manifest {manifest_digest}: {e}"),
                })
            })?;
        // Every blob first checked, before anything is fetched.
        let config_type = manifest.config().media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            return Err(Failure::Stop(PullError::MediaType {
                image: image.to_string(),
                what: "config",
                media_type: config_type,
            }));
        }
        if manifest.config().size() > MAX_CONFIG {
            return Err(Failure::Stop(PullError::TooLarge {
                image: image.to_string(),
                what: "the config",
                size: manifest.config().size(),
                limit: MAX_CONFIG,
            }));
        }
        let mut blobs = vec![(
            digest_of(image, manifest.config().digest().as_ref()).map_err(Failure::Stop)?,
            manifest.config().size(),
            false,
        )];
        for l in manifest.layers() {
            let mt = l.media_type().to_string();
            if !LAYER_TYPES.contains(&mt.as_str()) {
                let why = if mt.contains("nondistributable") || mt.contains("foreign") {
                    "layer (non-distributable layers are not fetched)"
                } else {
                    "layer"
                };
                return Err(Failure::Stop(PullError::MediaType {
                    image: image.to_string(),
                    what: why,
                    media_type: mt,
                }));
            }
            blobs.push((
                digest_of(image, l.digest().as_ref()).map_err(Failure::Stop)?,
                l.size(),
                true,
            ));
        }
        let fetches = futures_util::stream::iter(blobs.into_iter().map(|(d, size, layer)| {
            let progress = progress.clone();
            async move {
                self.fetch_blob(src, image, &d, size, layer, opts, progress)
                    .await
            }
        }))
        .buffer_unordered(opts.max_concurrent.max(1));
        fetches.try_collect::<Vec<()>>().await?;
        self.store
            .put(&manifest_digest, &manifest_bytes)
            .map_err(|e| Failure::Stop(content_err(image, e)))?;
        Ok(FetchedImage {
            name: Some(name.to_string()),
            manifest_digest,
            manifest,
        })
    }

    /// Size limit, JSON, and the digest the reference pins.
    fn check_manifest(
        &self,
        image: &str,
        bytes: &[u8],
        pinned: Option<&Digest>,
    ) -> Result<(Vec<u8>, Value), PullError> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(PullError::TooLarge {
                image: image.to_string(),
                what: "the manifest",
                size: bytes.len() as u64,
                limit: MAX_MANIFEST,
            });
        }
        if let Some(want) = pinned {
            let got = Digest::of(want.algorithm(), bytes);
            if &got != want {
                return Err(PullError::Blob {
                    image: image.to_string(),
                    blob: want.to_string(),
                    cause: format!("the registry sent a manifest hashing to {got}"),
                });
            }
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| PullError::Bad {
            image: image.to_string(),
            cause: format!("the manifest is not JSON: {e}"),
        })?;
        Ok((bytes.to_vec(), v))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob(
        &self,
        src: &Source,
        image: &str,
        d: &Digest,
        size: u64,
        layer: bool,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(), Failure> {
        let blob_err = |cause: String| {
            Failure::Stop(PullError::Blob {
                image: image.to_string(),
                blob: d.to_string(),
                cause,
            })
        };
        let mut attempt = 0u32;
        loop {
            let Some(mut w) = self
                .store
                .writer(d, Some(size))
                .map_err(|e| Failure::Stop(content_err(image, e)))?
            else {
                if layer {
                    progress.layer_done(d, true);
                }
                return Ok(());
            };
            let offset = w.offset();
            if layer {
                progress.layer_start(d, size, offset);
            }
            let digest_str = d.to_string();
            let result: Result<(), Failure> = async {
                let resp = if offset > 0 && offset < size {
                    src.client
                        .pull_blob_stream_partial(&src.reference, digest_str.as_str(), offset, None)
                        .await
                } else {
                    src.client
                        .pull_blob_stream(&src.reference, digest_str.as_str())
                        .await
                        .map(BlobResponse::Full)
                }
                .map_err(|e| classify(e, image, &src.host, "blob"))?;
                let mut stream = match resp {
                    BlobResponse::Partial(s) => s,
                    BlobResponse::Full(s) => {
                        if w.offset() > 0 {
                            // The registry sent it all: start the blob again.
                            w.reset()
                                .map_err(|e| Failure::Stop(content_err(image, e)))?;
                        }
                        s
                    }
                };
                while let Some(chunk) = stream.next().await {
                    if let Err(e) = &chunk {
                        // oci-client verifies a whole blob as it ends: the bytes written are
                        // bad, never to be resumed from.
                        let bad = e
                            .get_ref()
                            .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
                        if bad {
                            return Err(blob_err(format!("the registry sent other data: {e}")));
                        }
                    }
                    let chunk = chunk.map_err(|e| {
                        Failure::Next(PullError::Unreachable {
                            image: image.to_string(),
                            registry: src.host.clone(),
                            cause: format!("blob {d}: {e}"),
                        })
                    })?;
                    w.write_data(&chunk).map_err(|e| blob_err(e.to_string()))?;
                    if layer {
                        progress.layer_bytes(d, w.offset());
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    if w.offset() < size {
                        // The connection ended early: keep what came, resume.
                        let got = w.offset();
                        drop(w);
                        if attempt < opts.retries {
                            attempt += 1;
                            backoff(attempt).await;
                            continue;
                        }
                        return Err(blob_err(format!(
                            "truncated: the registry sent {got} of {size} bytes"
                        )));
                    }
                    w.commit().map_err(|e| blob_err(e.to_string()))?;
                    if layer {
                        progress.layer_done(d, false);
                    }
                    return Ok(());
                }
                Err(Failure::Next(e)) if attempt < opts.retries => {
                    drop(w);
                    attempt += 1;
                    progress.note(&format!(
                        "blob {}: {e}; retrying ({attempt}/{})",
                        d, opts.retries
                    ));
                    backoff(attempt).await;
                }
                Err(Failure::Stop(e)) => {
                    let _ = w.abort();
                    return Err(Failure::Stop(e));
                }
                Err(Failure::Next(e)) => {
                    drop(w);
                    return Err(Failure::Stop(e));
                }
            }
        }
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(200u64 << (attempt - 1).min(6))).await;
}

fn media_type(v: &Value) -> String {
    match v["mediaType"].as_str() {
        Some(m) => m.to_string(),
        // OCI allows leaving it out; the shape tells.
        None if v["manifests"].is_array() => platform::INDEX_TYPES[0].to_string(),
        None if v["config"].is_object() => platform::MANIFEST_TYPES[0].to_string(),
        None => String::new(),
    }
}

fn digest_of(image: &str, s: &str) -> Result<Digest, PullError> {
    s.parse().map_err(|e| PullError::Bad {
        image: image.to_string(),
        cause: format!("descriptor digest {s:?}: {e}"),
    })
}

fn content_err(image: &str, e: ContentError) -> PullError {
    PullError::Bad {
        image: image.to_string(),
        cause: e.to_string(),
    }
}

/// Sorts a client error into: not found, auth, try-elsewhere (network), or fatal.
fn classify(e: OciDistributionError, image: &str, host: &str, what: &str) -> Failure {
    use OciDistributionError as E;
    let registry = host.to_string();
    let image = image.to_string();
    match e {
        E::ImageManifestNotFoundError(_) => Failure::Next(PullError::NotFound { image, registry }),
        E::RegistryError { envelope, .. } => {
            let text = envelope
                .errors
                .iter()
                .map(|x| x.message.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let codes = format!(
                "{:?}",
                envelope.errors.iter().map(|x| &x.code).collect::<Vec<_>>()
            );
            if codes.contains("ManifestUnknown")
                || codes.contains("NameUnknown")
                || codes.contains("NotFound")
                || codes.contains("BlobUnknown")
            {
                Failure::Next(PullError::NotFound { image, registry })
            } else if codes.contains("Unauthorized") || codes.contains("Denied") {
                Failure::Stop(PullError::Unauthorized {
                    image,
                    registry,
                    cause: text,
                })
            } else {
                Failure::Stop(PullError::Bad {
                    image,
                    cause: format!("{what}: {text}"),
                })
            }
        }
        E::UnauthorizedError { url } => Failure::Stop(PullError::Unauthorized {
            image,
            registry,
            cause: format!("401 from {url}"),
        }),
        E::AuthenticationFailure(m) => Failure::Stop(PullError::Unauthorized {
            image,
            registry,
            cause: m,
        }),
        E::ServerError { code, url, message } => match code {
            404 => Failure::Next(PullError::NotFound { image, registry }),
            401 | 403 => Failure::Stop(PullError::Unauthorized {
                image,
                registry,
                cause: format!("HTTP {code} from {url}"),
            }),
            500..=599 => Failure::Next(PullError::Unreachable {
                image,
                registry,
                cause: format!("HTTP {code} from {url}: {}", message.trim()),
            }),
            _ => Failure::Stop(PullError::Bad {
                image,
                cause: format!("{what}: HTTP {code} from {url}: {}", message.trim()),
            }),
        },
        E::RequestError(r) => {
            let mut cause = r.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&r);
            while let Some(s) = src {
                cause.push_str(": ");
                cause.push_str(&s.to_string());
                src = s.source();
            }
            Failure::Next(PullError::Unreachable {
                image,
                registry,
                cause,
            })
        }
        E::IoError(io) => Failure::Next(PullError::Unreachable {
            image,
            registry,
            cause: io.to_string(),
        }),
        E::DigestError(d) => Failure::Stop(PullError::Blob {
            image,
            blob: what.to_string(),
            cause: d.to_string(),
        }),
        other => Failure::Stop(PullError::Bad {
            image,
            cause: format!("{what}: {other}"),
        }),
    }
}
