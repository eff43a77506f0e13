//! Pulling one image: resolve the name, fetch the manifest (picking a platform from an
//! index), then the config and the layers, several at once, each streamed into the content
//! store, resumed after a failure and retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::auth::{AuthError, AuthStore};
use super::client::{Client, ClientError};
use super::config::{ConfigError, Endpoint, RegistriesConfig};
use super::error_chain as chain;
use super::reference::ImageName;
use super::token::TokenError;
use crate::content::{ContentError, ContentStore};
use crate::digest::{Algorithm, Digest};
use crate::platform::{self, Platform};
use crate::FetchedImage;

/// Hears how a pull goes (a progress bar, plain lines, or nothing). Called from several
/// tasks at once: one per layer being fetched.
pub trait Progress: Send + Sync {
    /// A layer's fetch begins: `size` bytes in all, `resumed_from` of them already in the
    /// content store's ingest area from an earlier, interrupted pull (0 for a fresh start).
    fn layer_start(&self, digest: &Digest, size: u64, resumed_from: u64);
    /// More of the layer arrived: `total_so_far` bytes of it are written (resumed bytes
    /// included).
    fn layer_bytes(&self, digest: &Digest, total_so_far: u64);
    /// The layer is in the content store, verified. `already_present`: it was there before
    /// this pull and nothing was fetched.
    fn layer_done(&self, digest: &Digest, already_present: bool);
    /// Something worth a line: a retry, a mirror that failed, a search registry skipped.
    fn note(&self, message: &str);
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform picked from an index (multi-arch image); ignored for a plain manifest.
    pub platform: Platform,
    /// Blobs fetched at once (default 4).
    pub max_concurrent: usize,
    /// Retries of a transient failure (connection lost or refused, 5xx), after 200 ms,
    /// 400 ms, 800 ms… (default 3).
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
    /// The registry has no such repository, tag or digest (HTTP 404).
    #[error("image {image} not found in registry {registry}")]
    NotFound { image: String, registry: String },
    /// HTTP 401 or 403: no credentials where some are needed, or the wrong ones. `user` is
    /// the user name sent, if any.
    #[error("image {image}: registry {registry} refused the credentials{}: {cause}", whose(.user))]
    Unauthorized {
        image: String,
        registry: String,
        user: Option<String>,
        cause: String,
    },
    /// No answer: connection refused or lost, TLS failure, timeouts, 5xx after retries.
    #[error("image {image}: registry {registry} is unreachable: {cause}")]
    Unreachable {
        image: String,
        registry: String,
        cause: String,
    },
    /// A blob (or the manifest a reference pins) whose bytes hash to another digest.
    #[error(
        "image {image}: blob {blob}: digest mismatch, the registry sent data hashing to {actual}"
    )]
    DigestMismatch {
        image: String,
        blob: String,
        actual: String,
    },
    /// A blob that ended before the size its descriptor gives.
    #[error("image {image}: blob {blob} is truncated: the registry sent {got} of {size} bytes")]
    Truncated {
        image: String,
        blob: String,
        got: u64,
        size: u64,
    },
    /// Another failure fetching or storing one blob.
    #[error("image {image}: blob {blob}: {cause}")]
    Blob {
        image: String,
        blob: String,
        cause: String,
    },
    /// A registry reached over https whose 401 names a plain-http token realm: the
    /// credentials would cross the network in clear, so nothing is sent there.
    #[error("image {image}: registry {registry} names the token realm {realm}: plain http for a registry reached over https; no credentials are sent there")]
    InsecureRealm {
        image: String,
        registry: String,
        realm: String,
    },
    /// A manifest over 4 MiB or a config over 8 MiB; `size` when it is known (a manifest
    /// read as it streams is refused as soon as it passes the limit).
    #[error("image {image}: {what} is {}over the {limit}-byte limit", size.map(|s| format!("{s} bytes, ")).unwrap_or_default())]
    TooLarge {
        image: String,
        what: &'static str,
        size: Option<u64>,
        limit: u64,
    },
    /// A manifest, config or layer media type this puller does not take.
    #[error("image {image}: unsupported {what} media type {media_type:?}")]
    MediaType {
        image: String,
        what: &'static str,
        media_type: String,
    },
    /// A manifest or index that does not parse or lacks what it needs, or no manifest for
    /// the platform asked for.
    #[error("image {image}: {cause}")]
    Bad { image: String, cause: String },
    /// The name, or the registries config, forbids the pull.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credential files cannot be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

fn whose(user: &Option<String>) -> String {
    match user {
        Some(u) => format!(" of user {u}"),
        None => " (none are stored for it: log in first)".to_string(),
    }
}

use crate::{MAX_CONFIG, MAX_MANIFEST};

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

/// One endpoint, connected, with the tag or digest to fetch there.
struct Source {
    client: Client,
    /// The tag or digest of the image.
    reference: String,
    /// host[:port], for messages.
    host: String,
    /// The user name sent, for messages.
    user: Option<String>,
}

/// How bad a failure is, which decides what comes next.
enum Failure {
    /// Worth trying again at the same source after a pause: a 5xx, a connection lost in
    /// the middle, a timeout.
    Retry(PullError),
    /// This source will not do; the next one (mirror, scheme) may: connection refused, TLS
    /// failure, not found.
    Next(PullError),
    /// Stop the pull: bad credentials, bad data, an unsupported image.
    Stop(PullError),
}

/// Which of an image's blobs a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobKind {
    Config,
    Layer,
}

/// One blob to fetch.
#[derive(Debug)]
struct Wanted {
    digest: Digest,
    size: u64,
    kind: BlobKind,
}

impl Puller {
    /// A puller storing into `store`, reaching registries as `config` says, with the
    /// credentials `auth` finds. Installs rustls's ring provider if none is.
    pub fn new(store: ContentStore, config: RegistriesConfig, auth: AuthStore) -> Puller {
        super::init_tls();
        Puller {
            store,
            config,
            auth,
        }
    }

    /// An HTTP client for one endpoint: its CA certificates, and no certificate
    /// verification where the endpoint is insecure.
    fn http_client(&self, e: &Endpoint) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(e.insecure);
        for pem in self.config.ca_certs(&e.host) {
            let c = reqwest::Certificate::from_pem(&pem)
                .map_err(|err| format!("CA certificate for {}: {err}", e.host))?;
            b = b.add_root_certificate(c);
        }
        b.build().map_err(|err| chain(&err))
    }

    /// Connects to endpoint `e` over `scheme` (`GET /v2/`, then what its 401 asks for: a
    /// bearer token from the realm it names, checked first, see `token.rs`; or basic
    /// credentials), retrying transient failures.
    #[allow(clippy::too_many_arguments)]
    async fn connect(
        &self,
        e: &Endpoint,
        scheme: &'static str,
        creds: Option<&(String, String)>,
        user: &Option<String>,
        image: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Client, Failure> {
        let http = self.http_client(e).map_err(|cause| {
            Failure::Stop(PullError::Bad {
                image: image.to_string(),
                cause,
            })
        })?;
        let mut attempt = 0;
        loop {
            let r =
                Client::connect(http.clone(), scheme, &e.host, &e.repository, creds.cloned()).await;
            let err = match r {
                Ok(c) => return Ok(c),
                Err(err) => classify(err, image, &e.host, user, "registry"),
            };
            match err {
                Failure::Retry(err) if attempt < opts.retries => {
                    attempt += 1;
                    progress.note(&format!("{err}; retrying ({attempt}/{})", opts.retries));
                    backoff(attempt).await;
                }
                Failure::Retry(err) => return Err(Failure::Next(err)),
                other => return Err(other),
            }
        }
    }

    /// Pulls `name` (short names resolved through the config's search registries, tried in
    /// order while the image is not found or the registry does not answer): the index if
    /// any, the platform's manifest, its config and layers all end up in the content store.
    pub async fn pull(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<FetchedImage, PullError> {
        let candidates = self.config.candidates(name)?;
        let count = candidates.len();
        for (i, cand) in candidates.into_iter().enumerate() {
            match self.pull_one(&cand, opts, progress.clone()).await {
                Err(e @ (PullError::NotFound { .. } | PullError::Unreachable { .. }))
                    if i + 1 < count =>
                {
                    progress.note(&format!("{e}; trying the next search registry"));
                }
                other => return other,
            }
        }
        Err(PullError::Bad {
            image: name.to_string(),
            cause: "no registry to search".into(),
        })
    }

    /// Pulls one fully qualified name: its mirrors in order, then the registry.
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
            let creds = match self.auth.credentials(&e.host)? {
                Some(c) => Some(c),
                None => {
                    if let Some(f) = self.auth.identity_token_only(&e.host) {
                        progress.note(&format!(
                            "{}: the entry for {} holds only an identity token, which is not used; pulling without credentials",
                            f.display(),
                            e.host
                        ));
                    }
                    None
                }
            };
            let user = creds.as_ref().map(|(u, _)| u.clone());
            let reference = match (&name.digest, name.tag_or_latest()) {
                (Some(d), _) => d.to_string(),
                (None, t) => t.unwrap_or("latest").to_string(),
            };
            let schemes: &[&'static str] = if e.insecure {
                &["https", "http"]
            } else {
                &["https"]
            };
            for (i, &scheme) in schemes.iter().enumerate() {
                let outcome = match self
                    .connect(e, scheme, creds.as_ref(), &user, &image, opts, &*progress)
                    .await
                {
                    Ok(client) => {
                        let src = Source {
                            client,
                            reference: reference.clone(),
                            host: e.host.clone(),
                            user: user.clone(),
                        };
                        self.try_source(&src, name, &image, opts, progress.clone())
                            .await
                    }
                    Err(f) => Err(f),
                };
                match outcome {
                    Ok(f) => return Ok(f),
                    Err(Failure::Stop(err)) => return Err(err),
                    Err(Failure::Next(err) | Failure::Retry(err)) => {
                        if e.mirror && i + 1 == schemes.len() {
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

    /// Fetches a manifest (or index) by tag or digest, retrying transient failures; at most
    /// 4 MiB, refused as soon as the body passes that while it streams in (nothing more is
    /// read or held), and hashing to the digest the reference pins, if any.
    async fn manifest(
        &self,
        src: &Source,
        reference: &str,
        image: &str,
        pinned: Option<&Digest>,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<(Vec<u8>, Value), Failure> {
        let mut attempt = 0;
        let bytes = loop {
            match src
                .client
                .manifest(reference, ACCEPT, MAX_MANIFEST as usize)
                .await
            {
                Ok(b) => break b,
                Err(e) => match classify(e, image, &src.host, &src.user, "manifest") {
                    Failure::Retry(err) if attempt < opts.retries => {
                        attempt += 1;
                        progress.note(&format!(
                            "manifest: {err}; retrying ({attempt}/{})",
                            opts.retries
                        ));
                        backoff(attempt).await;
                    }
                    Failure::Retry(err) => return Err(Failure::Next(err)),
                    other => return Err(other),
                },
            }
        };
        check_manifest(image, &bytes, pinned)
            .map(|v| (bytes.to_vec(), v))
            .map_err(Failure::Stop)
    }

    async fn try_source(
        &self,
        src: &Source,
        name: &ImageName,
        image: &str,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<FetchedImage, Failure> {
        let stop = |cause: String| {
            Failure::Stop(PullError::Bad {
                image: image.to_string(),
                cause,
            })
        };
        let (mut manifest_bytes, mut value) = self
            .manifest(
                src,
                &src.reference,
                image,
                name.digest.as_ref(),
                opts,
                &*progress,
            )
            .await?;
        let mut media = media_type(&value);
        let mut index = None;
        if platform::INDEX_TYPES.contains(&media.as_str()) {
            let chosen = platform::select(&value, &opts.platform).map_err(stop)?;
            let d: Digest = chosen["digest"]
                .as_str()
                .unwrap_or("")
                .parse()
                .map_err(|e| stop(format!("index entry digest: {e}")))?;
            let by_digest = d.to_string();
            index = Some(manifest_bytes);
            (manifest_bytes, value) = self
                .manifest(src, &by_digest, image, Some(&d), opts, &*progress)
                .await?;
            media = media_type(&value);
        }
        if !platform::MANIFEST_TYPES.contains(&media.as_str()) {
            return Err(Failure::Stop(PullError::MediaType {
                image: image.to_string(),
                what: if platform::INDEX_TYPES.contains(&media.as_str()) {
                    "manifest (an index inside an index)"
                } else {
                    "manifest"
                },
                media_type: media,
            }));
        }
        let manifest_digest = Digest::of(Algorithm::Sha256, &manifest_bytes);
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| stop(format!("manifest {manifest_digest}: {e}")))?;
        let wanted = wanted_blobs(image, &manifest).map_err(Failure::Stop)?;
        let fetches = futures_util::stream::iter(wanted.into_iter().map(|w| {
            let progress = progress.clone();
            async move { self.fetch_blob(src, image, &w, opts, &*progress).await }
        }))
        .buffer_unordered(opts.max_concurrent.max(1));
        fetches.try_collect::<Vec<()>>().await?;
        // The index and the manifest last: a manifest in the store means its blobs are too.
        if let Some(bytes) = index {
            let d = Digest::of(Algorithm::Sha256, &bytes);
            self.store
                .put(&d, &bytes)
                .map_err(|e| stop(format!("store the index {d}: {}", chain(&e))))?;
        }
        self.store
            .put(&manifest_digest, &manifest_bytes)
            .map_err(|e| stop(format!("store the manifest: {}", chain(&e))))?;
        Ok(FetchedImage {
            name: Some(name.to_string()),
            manifest_digest,
            manifest,
        })
    }

    /// Fetches one blob into the content store, resuming what an earlier attempt (or an
    /// earlier, killed pull) left in the ingest area, retrying transient failures. Bad data
    /// (another digest, too short, too long) is dropped, never resumed from.
    async fn fetch_blob(
        &self,
        src: &Source,
        image: &str,
        want: &Wanted,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let d = &want.digest;
        let size = want.size;
        let layer = want.kind == BlobKind::Layer;
        let fatal = |cause: String| {
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
                .map_err(|e| fatal(format!("content store: {}", chain(&e))))?
            else {
                if layer {
                    progress.layer_done(d, true);
                }
                return Ok(());
            };
            let resumed_from = w.offset();
            if layer {
                progress.layer_start(d, size, resumed_from);
            }
            let result = if resumed_from == size {
                Ok(())
            } else {
                self.stream_into(src, image, want, &mut w, progress).await
            };
            let failure = match result {
                Ok(()) => match w.commit() {
                    Ok(()) => {
                        if layer {
                            progress.layer_done(d, false);
                        }
                        return Ok(());
                    }
                    // What an earlier pull left was not a prefix of this blob: it is gone
                    // now (commit removes bad data); fetch the whole blob once more.
                    Err(ContentError::DigestMismatch { .. })
                        if resumed_from > 0 && attempt == 0 =>
                    {
                        attempt += 1;
                        progress.note(&format!(
                            "blob {d}: the partial data kept from before was bad; fetching it again"
                        ));
                        continue;
                    }
                    Err(ContentError::DigestMismatch { actual, .. }) => {
                        return Err(Failure::Stop(PullError::DigestMismatch {
                            image: image.to_string(),
                            blob: d.to_string(),
                            actual: actual.to_string(),
                        }))
                    }
                    Err(ContentError::SizeMismatch { actual, .. }) => {
                        return Err(Failure::Stop(PullError::Truncated {
                            image: image.to_string(),
                            blob: d.to_string(),
                            got: actual,
                            size,
                        }))
                    }
                    Err(e) => return Err(fatal(format!("content store: {}", chain(&e)))),
                },
                Err(f) => f,
            };
            match failure {
                Failure::Retry(e) | Failure::Next(e @ PullError::Unreachable { .. })
                    if attempt < opts.retries =>
                {
                    // Keep what arrived: the next attempt resumes from it.
                    drop(w);
                    attempt += 1;
                    progress.note(&format!("{e}; retrying ({attempt}/{})", opts.retries));
                    backoff(attempt).await;
                }
                Failure::Stop(e) => {
                    let _ = w.abort();
                    return Err(Failure::Stop(e));
                }
                // Out of retries, or the source does not have it: the next source may.
                Failure::Retry(e) | Failure::Next(e) => {
                    drop(w);
                    return Err(Failure::Next(e));
                }
            }
        }
    }

    /// Streams the rest of a blob (from `w.offset()`) into `w`, never more than its
    /// descriptor's size; the content store verifies size and digest at commit.
    async fn stream_into(
        &self,
        src: &Source,
        image: &str,
        want: &Wanted,
        w: &mut crate::content::Writer,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let d = &want.digest;
        let size = want.size;
        let offset = w.offset();
        let (mut resp, partial) = src
            .client
            .blob(&d.to_string(), offset)
            .await
            .map_err(|e| classify(e, image, &src.host, &src.user, &format!("blob {d}")))?;
        if !partial && w.offset() > 0 {
            // The registry ignored the range and sent it all: start again.
            w.reset().map_err(|e| {
                Failure::Stop(PullError::Blob {
                    image: image.to_string(),
                    blob: d.to_string(),
                    cause: format!("content store: {}", chain(&e)),
                })
            })?;
        }
        let truncated = |got: u64| {
            Failure::Stop(PullError::Truncated {
                image: image.to_string(),
                blob: d.to_string(),
                got,
                size,
            })
        };
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Retry(PullError::Unreachable {
                        image: image.to_string(),
                        registry: src.host.clone(),
                        cause: format!(
                            "blob {d}: the connection broke after {} bytes: {e}",
                            w.offset()
                        ),
                    }));
                }
            };
            w.write_data(&chunk).map_err(|e| match e {
                ContentError::TooLarge { .. } => Failure::Stop(PullError::Blob {
                    image: image.to_string(),
                    blob: d.to_string(),
                    cause: format!(
                        "the registry sent more than the {size} bytes the manifest gives"
                    ),
                }),
                e => Failure::Stop(PullError::Blob {
                    image: image.to_string(),
                    blob: d.to_string(),
                    cause: format!("content store: {}", chain(&e)),
                }),
            })?;
            if want.kind == BlobKind::Layer {
                progress.layer_bytes(d, w.offset());
            }
        }
        if w.offset() < size {
            // The registry's own copy is short (a lost connection is an error above).
            return Err(truncated(w.offset()));
        }
        Ok(())
    }
}

/// The config and layers of `manifest`, each checked (media type, size, digest) before
/// anything is fetched.
fn wanted_blobs(
    image: &str,
    manifest: &oci_spec::image::ImageManifest,
) -> Result<Vec<Wanted>, PullError> {
    let config_type = manifest.config().media_type().to_string();
    if !CONFIG_TYPES.contains(&config_type.as_str()) {
        return Err(PullError::MediaType {
            image: image.to_string(),
            what: "config",
            media_type: config_type,
        });
    }
    if manifest.config().size() > MAX_CONFIG {
        return Err(PullError::TooLarge {
            image: image.to_string(),
            what: "the config",
            size: Some(manifest.config().size()),
            limit: MAX_CONFIG,
        });
    }
    let mut out = vec![Wanted {
        digest: digest_of(image, manifest.config().digest().as_ref())?,
        size: manifest.config().size(),
        kind: BlobKind::Config,
    }];
    for l in manifest.layers() {
        let mt = l.media_type().to_string();
        if !LAYER_TYPES.contains(&mt.as_str()) {
            let what = if mt.contains("nondistributable") || mt.contains("foreign") {
                "layer (non-distributable and foreign layers are not fetched)"
            } else {
                "layer"
            };
            return Err(PullError::MediaType {
                image: image.to_string(),
                what,
                media_type: mt,
            });
        }
        out.push(Wanted {
            digest: digest_of(image, l.digest().as_ref())?,
            size: l.size(),
            kind: BlobKind::Layer,
        });
    }
    Ok(out)
}

/// Size limit, the digest the reference pins, and JSON.
fn check_manifest(image: &str, bytes: &[u8], pinned: Option<&Digest>) -> Result<Value, PullError> {
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(PullError::TooLarge {
            image: image.to_string(),
            what: "the manifest",
            size: Some(bytes.len() as u64),
            limit: MAX_MANIFEST,
        });
    }
    if let Some(want) = pinned {
        let got = Digest::of(want.algorithm(), bytes);
        if &got != want {
            return Err(PullError::DigestMismatch {
                image: image.to_string(),
                blob: want.to_string(),
                actual: got.to_string(),
            });
        }
    }
    serde_json::from_slice(bytes).map_err(|e| PullError::Bad {
        image: image.to_string(),
        cause: format!("the manifest is not JSON: {e}"),
    })
}

/// 200 ms, 400 ms, 800 ms… capped at 12.8 s.
async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(
        200u64 << attempt.saturating_sub(1).min(6),
    ))
    .await;
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

/// Sorts a client error into retry-here, try-elsewhere, or stop; `what` is the thing
/// fetched ("manifest", "blob sha256:…", "registry" for the first contact).
fn classify(
    e: ClientError,
    image: &str,
    registry: &str,
    user: &Option<String>,
    what: &str,
) -> Failure {
    let registry = registry.to_string();
    let image = image.to_string();
    let blob = what.strip_prefix("blob ");
    let not_found = |image: String, registry: String| match blob {
        Some(b) => Failure::Next(PullError::Blob {
            image,
            blob: b.to_string(),
            cause: format!("not found in registry {registry}"),
        }),
        None => Failure::Next(PullError::NotFound { image, registry }),
    };
    let unauthorized = |image: String, registry: String, cause: String| {
        Failure::Stop(PullError::Unauthorized {
            image,
            registry,
            user: user.clone(),
            cause,
        })
    };
    match e {
        ClientError::Connect { cause } => Failure::Next(PullError::Unreachable {
            image,
            registry,
            cause,
        }),
        ClientError::Transport { cause } => Failure::Retry(PullError::Unreachable {
            image,
            registry,
            cause,
        }),
        ClientError::TooLarge { limit } => Failure::Stop(PullError::TooLarge {
            image,
            what: if blob.is_some() {
                "a blob"
            } else {
                "the manifest"
            },
            size: None,
            limit: limit as u64,
        }),
        ClientError::Token(TokenError::InsecureRealm { realm }) => {
            Failure::Stop(PullError::InsecureRealm {
                image,
                registry,
                realm,
            })
        }
        ClientError::Token(t @ TokenError::Refused { .. }) => {
            unauthorized(image, registry, t.to_string())
        }
        ClientError::Token(t @ TokenError::Unreachable { .. }) => {
            Failure::Next(PullError::Unreachable {
                image,
                registry,
                cause: t.to_string(),
            })
        }
        ClientError::Token(t) => Failure::Stop(PullError::Bad {
            image,
            cause: t.to_string(),
        }),
        ClientError::Status {
            url,
            status,
            codes,
            message,
        } => {
            let code = status.as_u16();
            let has = |c: &[&str]| codes.iter().any(|x| c.contains(&x.as_str()));
            let text = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            if code == 404
                || has(&[
                    "MANIFEST_UNKNOWN",
                    "NAME_UNKNOWN",
                    "BLOB_UNKNOWN",
                    "NOT_FOUND",
                ])
            {
                not_found(image, registry)
            } else if code == 401 {
                unauthorized(image, registry, format!("HTTP 401 from {url}"))
            } else if code == 403 || has(&["UNAUTHORIZED", "DENIED"]) {
                unauthorized(image, registry, format!("HTTP {code} from {url}{text}"))
            } else if status.is_server_error() || code == 429 {
                Failure::Retry(PullError::Unreachable {
                    image,
                    registry,
                    cause: format!("HTTP {code} from {url}{text}"),
                })
            } else {
                Failure::Stop(PullError::Bad {
                    image,
                    cause: format!("{what}: HTTP {code} from {url}{text}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
