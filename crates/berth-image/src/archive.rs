//! Import and export without a registry: OCI image layout directories, oci-archive tarballs
//! (a layout in a tar, what `podman save --format oci-archive` writes) and docker-archive
//! tarballs (`manifest.json` + config + layer tars, what `docker save` and
//! `podman save --format docker-archive` write; newer docker puts an OCI layout beside
//! `manifest.json`, and then the layout is read).
//!
//! Archives are hostile input: a tar is unpacked into a staging directory under the
//! content store (same file system) accepting only regular files and directories with
//! plain relative names (no `..`, no absolute names, no links or devices); JSON documents
//! are size-limited; every blob is stored through the content store, which checks it
//! against its digest and size. Export writes to an unguessable temporary name beside
//! `dest`, relative to a descriptor of its directory, and renames it into place without
//! replacing anything, so a failure leaves nothing at `dest` and a link planted in that
//! directory is never written through (see [`export`]).
//!
//! Names: an image's name comes from the index annotation
//! `org.opencontainers.image.ref.name` (or `io.containerd.image.name`), or docker's
//! `RepoTags`. A name with a registry or repository part is normalised as docker does
//! (`busybox:1` → `docker.io/library/busybox:1`); a bare tag (what `skopeo copy oci:DIR:TAG`
//! writes) is not a name, and the image is imported without one.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use oci_spec::image::MediaType;

use serde_json::{json, Value};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Algorithm, Digest};
use crate::fsutil;
use crate::platform::{self, Platform};
use crate::FetchedImage;

/// The archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    OciLayout,
    OciArchive,
    DockerArchive,
}

/// Why an archive could not be read or written; each names the archive and, where there is
/// one, the member.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{archive}: {cause}")]
    Bad { archive: String, cause: String },
    #[error("{archive}: member {member:?}: {cause}")]
    Member {
        archive: String,
        member: String,
        cause: String,
    },
    #[error("{archive}: {what}: {source}")]
    Io {
        archive: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: {source}")]
    Content {
        archive: String,
        #[source]
        source: ContentError,
    },
}

/// An image to export: its name (written into the archive) and manifest.
pub struct ExportImage<'a> {
    pub name: Option<&'a str>,
    pub manifest_digest: &'a Digest,
}

use crate::{MAX_CONFIG, MAX_MANIFEST};

struct Ctx<'a> {
    archive: &'a str,
}

impl Ctx<'_> {
    fn bad(&self, cause: impl Into<String>) -> ArchiveError {
        ArchiveError::Bad {
            archive: self.archive.to_string(),
            cause: cause.into(),
        }
    }
    fn member(&self, member: &str, cause: impl Into<String>) -> ArchiveError {
        ArchiveError::Member {
            archive: self.archive.to_string(),
            member: member.to_string(),
            cause: cause.into(),
        }
    }
    fn io(&self, what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        let what = what.into();
        move |source| ArchiveError::Io {
            archive: self.archive.to_string(),
            what,
            source,
        }
    }
    fn content(&self) -> impl FnOnce(ContentError) -> ArchiveError + '_ {
        move |source| ArchiveError::Content {
            archive: self.archive.to_string(),
            source,
        }
    }
}

/// Tells the format of `path` (a directory or a tar, maybe compressed).
pub fn detect(path: &Path) -> Result<ArchiveFormat, ArchiveError> {
    let cx = Ctx {
        archive: &path.to_string_lossy(),
    };
    let meta = fs::metadata(path).map_err(cx.io("stat"))?;
    if meta.is_dir() {
        if path.join("oci-layout").is_file() {
            return Ok(ArchiveFormat::OciLayout);
        }
        return Err(cx.bad("a directory without an oci-layout file"));
    }
    let f = File::open(path).map_err(cx.io("open"))?;
    let plain = crate::unpack::decompressed(f).map_err(cx.io("read"))?;
    let mut ar = tar::Archive::new(crate::tarbound::Bounded::new(plain));
    let (mut layout, mut index, mut manifest) = (false, false, false);
    for e in ar.entries().map_err(cx.io("read the tar"))? {
        let e = e.map_err(cx.io("read the tar"))?;
        match e.path_bytes().as_ref() {
            b"oci-layout" | b"./oci-layout" => layout = true,
            b"index.json" | b"./index.json" => index = true,
            b"manifest.json" | b"./manifest.json" => manifest = true,
            _ => {}
        }
    }
    match (layout && index, manifest) {
        (true, _) => Ok(ArchiveFormat::OciArchive),
        (false, true) => Ok(ArchiveFormat::DockerArchive),
        _ => Err(cx.bad(
            "neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)",
        )),
    }
}

/// Imports every image in the archive at `path`; for an index, the manifest for
/// `platform` (os, architecture, variant).
pub fn import(
    store: &ContentStore,
    path: &Path,
    platform: (&str, &str, Option<&str>),
) -> Result<Vec<FetchedImage>, ArchiveError> {
    let name = path.to_string_lossy().into_owned();
    let cx = Ctx { archive: &name };
    let plat = Platform {
        os: platform.0.to_string(),
        architecture: platform.1.to_string(),
        variant: platform.2.map(str::to_string),
    };
    match detect(path)? {
        ArchiveFormat::OciLayout => import_layout(&cx, store, path, &plat),
        _ => {
            let stage = store.staging_dir("archive").map_err(cx.content())?;
            let r = (|| {
                let aliases = unpack_members(&cx, path, &stage)?;
                if stage.join("oci-layout").is_file() && stage.join("index.json").is_file() {
                    import_layout(&cx, store, &stage, &plat)
                } else {
                    import_docker(&cx, store, &stage, &aliases)
                }
            })();
            let _ = fs::remove_dir_all(&stage);
            r
        }
    }
}

/// Member names: relative, no `..`, no empty or `.` parts left after normalising.
fn member_path(name: &[u8]) -> Option<PathBuf> {
    if name.first() == Some(&b'/') || name.contains(&0) {
        return None;
    }
    let mut out = PathBuf::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(std::str::from_utf8(c).ok()?),
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Symlink members (docker archives alias `<id>/layer.tar` to another member): the
/// member's path and its target's, both inside the archive. Never made on disk.
type Aliases = std::collections::HashMap<PathBuf, PathBuf>;

fn unpack_members(cx: &Ctx, path: &Path, stage: &Path) -> Result<Aliases, ArchiveError> {
    let mut aliases = Aliases::new();
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::open(path).map_err(cx.io("open"))?;
    let plain = crate::unpack::decompressed(f).map_err(cx.io("read"))?;
    let mut ar = tar::Archive::new(crate::tarbound::Bounded::new(plain));
    for e in ar.entries().map_err(cx.io("read the tar"))? {
        let mut e = e.map_err(cx.io("read the tar"))?;
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        if raw == b"." || raw == b"./" {
            continue;
        }
        let rel = member_path(&raw).ok_or_else(|| {
            cx.member(&shown, "not a plain relative name (absolute, `..` or NUL)")
        })?;
        let dest = stage.join(&rel);
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(cx.io(format!("stage {shown}")))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(cx.io(format!("stage {shown}")))?;
                }
                // Every parent is a directory made here (never a link: no link is made).
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(cx.io(format!("stage {shown}")))?;
                io::copy(&mut e, &mut out).map_err(cx.io(format!("stage {shown}")))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.first() == Some(&b'/') {
                    return Err(cx.member(&shown, "a link to an absolute path"));
                }
                let mut joined = rel
                    .parent()
                    .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
                    .unwrap_or_default();
                joined.push(b'/');
                joined.extend_from_slice(&target);
                let resolved = resolve_dots(&joined)
                    .and_then(|p| member_path(&p))
                    .ok_or_else(|| cx.member(&shown, "a link out of the archive"))?;
                aliases.insert(rel, resolved);
            }
            other => {
                return Err(cx.member(
                    &shown,
                    format!(
                        "a {other:?} entry: only files, directories and links between members \
                         belong in an image archive"
                    ),
                ))
            }
        }
    }
    Ok(aliases)
}

/// `a/b/../c` → `a/c`; None when `..` climbs above the top.
fn resolve_dots(p: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join(&b'/'))
}

/// A JSON document of the archive (index.json, manifest.json), at most [`MAX_MANIFEST`]
/// bytes, read no further than that.
fn read_json(cx: &Ctx, path: &Path, member: &str) -> Result<Value, ArchiveError> {
    let f = File::open(path).map_err(|e| cx.member(member, e.to_string()))?;
    let mut data = Vec::new();
    f.take(MAX_MANIFEST + 1)
        .read_to_end(&mut data)
        .map_err(cx.io(format!("read {member}")))?;
    if data.len() as u64 > MAX_MANIFEST {
        return Err(cx.member(member, format!("larger than {MAX_MANIFEST} bytes")));
    }
    serde_json::from_slice(&data).map_err(|e| cx.member(member, format!("not JSON: {e}")))
}

/// The size a descriptor gives a JSON document, required and at most `limit`: checked
/// before the blob is copied or read.
fn document_size(
    cx: &Ctx,
    desc: &Value,
    member: &str,
    what: &str,
    limit: u64,
) -> Result<u64, ArchiveError> {
    match desc["size"].as_u64() {
        None => Err(cx.member(member, format!("{what} descriptor without a size"))),
        Some(s) if s > limit => Err(cx.member(
            member,
            format!("{what} of {s} bytes, over the {limit}-byte limit"),
        )),
        Some(s) => Ok(s),
    }
}

fn parse_digest(cx: &Ctx, v: &Value, member: &str) -> Result<Digest, ArchiveError> {
    v.as_str()
        .ok_or_else(|| cx.member(member, "a descriptor without a digest"))?
        .parse()
        .map_err(|e| cx.member(member, format!("{e}")))
}

/// Copies blob `d` (of `size` bytes) from a layout's blobs directory into the store.
fn copy_blob(
    cx: &Ctx,
    store: &ContentStore,
    layout: &Path,
    d: &Digest,
    size: Option<u64>,
) -> Result<(), ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let member = format!("blobs/{}/{}", d.algorithm().name(), d.hex());
    let Some(mut w) = store.writer(d, size).map_err(cx.content())? else {
        return Ok(());
    };
    if w.offset() > 0 {
        // A partial copy from an earlier attempt: start over (local files are cheap).
        w.abort().map_err(cx.content())?;
        return copy_blob(cx, store, layout, d, size);
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(layout.join(&member))
        .map_err(|e| cx.member(&member, format!("missing or unreadable: {e}")))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(cx.io(format!("read {member}")))?;
        if n == 0 {
            break;
        }
        if let Err(e) = w.write_data(&buf[..n]) {
            return Err(cx.member(&member, e.to_string()));
        }
    }
    w.commit().map_err(|e| cx.member(&member, e.to_string()))
}

/// A name as docker and podman spell it in full, or None for a bare tag.
pub fn normalise_name(n: &str) -> Option<String> {
    if n.is_empty() || !(n.contains('/') || n.contains(':')) {
        return None;
    }
    let (repo, tag) = match n.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
        _ => (n.to_string(), None),
    };
    if repo.is_empty() {
        return None;
    }
    let first = repo.split('/').next().unwrap_or("");
    let qualified = first.contains('.') || first.contains(':') || first == "localhost";
    let repo = if qualified {
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    Some(format!("{repo}:{}", tag.unwrap_or_else(|| "latest".into())))
}

fn import_layout(
    cx: &Ctx,
    store: &ContentStore,
    layout: &Path,
    plat: &Platform,
) -> Result<Vec<FetchedImage>, ArchiveError> {
    let index = read_json(cx, &layout.join("index.json"), "index.json")?;
    let list = index["manifests"]
        .as_array()
        .ok_or_else(|| cx.member("index.json", "no manifests array"))?;
    let mut out = Vec::new();
    for desc in list {
        let annotations = &desc["annotations"];
        let name = annotations["io.containerd.image.name"]
            .as_str()
            .or(annotations["org.opencontainers.image.ref.name"].as_str())
            .and_then(normalise_name);
        let mut desc = desc.clone();
        let mut mt = desc["mediaType"].as_str().unwrap_or("").to_string();
        if platform::INDEX_TYPES.contains(&mt.as_str()) {
            let d = parse_digest(cx, &desc["digest"], "index.json")?;
            let size = document_size(cx, &desc, "index.json", "an index", MAX_MANIFEST)?;
            copy_blob(cx, store, layout, &d, Some(size))?;
            let nested: Value = serde_json::from_slice(&store.read(&d).map_err(cx.content())?)
                .map_err(|e| cx.member(&format!("blobs/{}", d), format!("not JSON: {e}")))?;
            desc = platform::select(&nested, plat)
                .map_err(|e| cx.member(&format!("blobs/{d}"), e))?
                .clone();
            mt = desc["mediaType"].as_str().unwrap_or("").to_string();
        }
        if !platform::MANIFEST_TYPES.contains(&mt.as_str()) {
            return Err(cx.member(
                "index.json",
                format!("unsupported manifest media type {mt:?}"),
            ));
        }
        let md = parse_digest(cx, &desc["digest"], "index.json")?;
        let msize = document_size(cx, &desc, "index.json", "a manifest", MAX_MANIFEST)?;
        copy_blob(cx, store, layout, &md, Some(msize))?;
        let manifest_bytes = store.read(&md).map_err(cx.content())?;
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| {
                cx.member(
                    &format!("blobs/{md}"),
                    format!("not an image manifest: {e}"),
                )
            })?;
        let cd: Digest = manifest
            .config()
            .digest()
            .to_string()
            .parse()
            .map_err(|e| cx.member(&format!("blobs/{md}"), format!("{e}")))?;
        if manifest.config().size() > MAX_CONFIG {
            return Err(cx.member(
                &format!("blobs/{md}"),
                format!(
                    "a config of {} bytes, over the {MAX_CONFIG}-byte limit",
                    manifest.config().size()
                ),
            ));
        }
        copy_blob(cx, store, layout, &cd, Some(manifest.config().size()))?;
        for l in manifest.layers() {
            let ld: Digest = l
                .digest()
                .to_string()
                .parse()
                .map_err(|e| cx.member(&format!("blobs/{md}"), format!("{e}")))?;
            copy_blob(cx, store, layout, &ld, Some(l.size()))?;
        }
        out.push(FetchedImage {
            name,
            manifest_digest: md,
            manifest,
        });
    }
    Ok(out)
}

fn layer_media_type(store: &ContentStore, d: &Digest) -> &'static str {
    let mut head = [0u8; 4];
    let n = store
        .open_blob(d)
        .and_then(|mut f| {
            f.read(&mut head).map_err(|e| ContentError::Io {
                context: String::new(),
                source: e,
            })
        })
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

fn import_docker(
    cx: &Ctx,
    store: &ContentStore,
    stage: &Path,
    aliases: &Aliases,
) -> Result<Vec<FetchedImage>, ArchiveError> {
    let manifest = read_json(cx, &stage.join("manifest.json"), "manifest.json")?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| cx.member("manifest.json", "not a list"))?;
    let open_member = |m: &str| -> Result<File, ArchiveError> {
        let mut rel = member_path(m.as_bytes()).ok_or_else(|| {
            cx.member(
                "manifest.json",
                format!("refers to {m:?}, not a plain relative name"),
            )
        })?;
        for _ in 0..8 {
            match aliases.get(&rel) {
                Some(t) => rel = t.clone(),
                None => break,
            }
        }
        File::open(stage.join(&rel)).map_err(|e| cx.member(m, format!("missing: {e}")))
    };
    let mut out = Vec::new();
    for e in entries {
        let config_member = e["Config"]
            .as_str()
            .ok_or_else(|| cx.member("manifest.json", "an entry without Config"))?;
        let mut cf = open_member(config_member)?;
        let mut config_bytes = Vec::new();
        (&mut cf)
            .take(MAX_CONFIG + 1)
            .read_to_end(&mut config_bytes)
            .map_err(cx.io(format!("read {config_member}")))?;
        if config_bytes.len() as u64 > MAX_CONFIG {
            return Err(cx.member(config_member, format!("larger than {MAX_CONFIG} bytes")));
        }
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|err| cx.member(config_member, format!("not JSON: {err}")))?;
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let layers = e["Layers"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(cx.member(
                config_member,
                format!("{} diffIDs for {} layers", diff_ids.len(), layers.len()),
            ));
        }
        let config_digest = Digest::of(Algorithm::Sha256, &config_bytes);
        store
            .put(&config_digest, &config_bytes)
            .map_err(cx.content())?;
        let mut layer_descs = Vec::new();
        for l in &layers {
            let lm = l
                .as_str()
                .ok_or_else(|| cx.member("manifest.json", "a layer that is not a path"))?;
            let (d, size) = store.ingest(open_member(lm)?).map_err(cx.content())?;
            layer_descs.push(json!({"mediaType": layer_media_type(store, &d), "digest": d.to_string(), "size": size}));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layer_descs,
        });
        let mb = serde_json::to_vec(&m).map_err(|err| cx.bad(err.to_string()))?;
        let md = Digest::of(Algorithm::Sha256, &mb);
        store.put(&md, &mb).map_err(cx.content())?;
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_value(m).map_err(|err| cx.bad(err.to_string()))?;
        let name = e["RepoTags"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t.as_str())
            .and_then(normalise_name);
        out.push(FetchedImage {
            name,
            manifest_digest: md,
            manifest,
        });
    }
    Ok(out)
}

/// Makes a one-layer image from the root file system tarball at `path` (plain, gzip or
/// zstd), as `podman import` does. The tarball is never held in memory: it is first walked
/// as a stream (every header read, extension headers bounded, see `tarbound.rs`) while its
/// uncompressed bytes are hashed into the layer's diffID, then copied as it is (compressed
/// or not) into the content store. An empty archive, or one that is not a tar, is an
/// error naming the file.
pub fn import_rootfs(
    store: &ContentStore,
    path: &Path,
    name: Option<String>,
    config: oci_spec::image::Config,
    architecture: &str,
) -> Result<FetchedImage, ArchiveError> {
    let shown = path.to_string_lossy().into_owned();
    let cx = Ctx { archive: &shown };
    let open = || File::open(path).map(|f| io::BufReader::with_capacity(256 << 10, f));
    let plain =
        crate::unpack::decompressed(open().map_err(cx.io("open"))?).map_err(cx.io("read"))?;
    let mut hashing = crate::unpack::Hashing {
        inner: plain,
        hasher: Algorithm::Sha256.hasher(),
        size: 0,
    };
    let not_tar = |e: io::Error| match crate::tarbound::HeaderTooLarge::find(&e) {
        Some(t) => cx.bad(t.to_string()),
        None => cx.bad(format!("not a tar archive: {e}")),
    };
    let mut entries = 0u64;
    {
        let mut ar = tar::Archive::new(crate::tarbound::Bounded::new(&mut hashing));
        for e in ar.entries().map_err(not_tar)? {
            match e {
                Ok(_) => entries += 1,
                // A stream that ends right after its last entry's data (as the unpacker
                // accepts it).
                Err(e)
                    if entries > 0
                        && e.kind() == io::ErrorKind::Other
                        && e.to_string().contains("EOF") =>
                {
                    break
                }
                Err(e) => return Err(not_tar(e)),
            }
        }
    }
    if entries == 0 {
        return Err(cx.bad("an empty archive"));
    }
    io::copy(&mut hashing, &mut io::sink()).map_err(cx.io("read"))?;
    let diff_id = hashing.hasher.finish();
    let (digest, size) = store
        .ingest(open().map_err(cx.io("open"))?)
        .map_err(cx.content())?;
    let media_type = match layer_media_type(store, &digest) {
        "application/vnd.oci.image.layer.v1.tar+gzip" => MediaType::ImageLayerGzip,
        "application/vnd.oci.image.layer.v1.tar+zstd" => MediaType::ImageLayerZstd,
        _ => MediaType::ImageLayer,
    };
    let layer = crate::build::StoredLayer {
        digest,
        size,
        media_type,
        diff_id,
    };
    crate::build::store_image_of(store, name, &[layer], config, architecture)
        .map_err(|e| cx.bad(e.to_string()))
}

/// Writes `images` in `format` to `dest`, which must not exist.
///
/// `dest`'s directory may be writable by others (a user asks root to save into their own
/// directory), so nothing there is trusted: the directory is opened once and everything is
/// done relative to that descriptor; the output is first written under an unguessable
/// temporary name made with `O_CREAT|O_EXCL|O_NOFOLLOW` (a file) or mkdirat, then opened
/// without following a link and checked to be ours (a directory), and a directory output's
/// tree is made with mkdirat/openat under its descriptor, never by path; the result is
/// renamed into place without replacing anything that appeared at `dest` meanwhile
/// (`RENAME_NOREPLACE`). So a link planted anywhere on the way is never written through.
pub fn export(
    store: &ContentStore,
    images: &[ExportImage],
    format: ArchiveFormat,
    dest: &Path,
) -> Result<(), ArchiveError> {
    let shown = dest.to_string_lossy().into_owned();
    let cx = Ctx { archive: &shown };
    let exists = || cx.bad("exists already; remove it or choose another name");
    if fs::symlink_metadata(dest).is_ok() {
        return Err(exists());
    }
    let (parent, name) = fsutil::split(dest).map_err(cx.io("choose the output"))?;
    let dir = fsutil::open_dir(parent).map_err(cx.io(format!("open {}", parent.display())))?;
    let tmp = match format {
        ArchiveFormat::OciLayout => {
            let (tmp_dir, tmp) = fsutil::create_temp_dir(&dir, name)
                .map_err(cx.io("create a temporary directory"))?;
            let r = write_layout_dir(&cx, store, images, &tmp_dir)
                .and_then(|()| {
                    nix::sys::stat::fchmod(
                        &tmp_dir,
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    )
                    .map_err(|e| cx.io("set the directory's mode")(e.into()))
                })
                .and_then(|()| nix::unistd::fsync(&tmp_dir).map_err(|e| cx.io("sync")(e.into())));
            (r, tmp)
        }
        ArchiveFormat::OciArchive | ArchiveFormat::DockerArchive => {
            let (file, tmp) = fsutil::create_temp_file(&dir, name, 0o644)
                .map_err(cx.io("create a temporary file"))?;
            let r = if format == ArchiveFormat::OciArchive {
                write_tar(&cx, file, |b| write_layout_tar(&cx, store, images, b))
            } else {
                write_tar(&cx, file, |b| write_docker_tar(&cx, store, images, b))
            };
            (r, tmp)
        }
    };
    let (r, tmp) = tmp;
    let r = r.and_then(|()| {
        fsutil::rename_noreplace(&dir, &tmp, name).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                exists()
            } else {
                cx.io("rename into place")(e)
            }
        })
    });
    match r {
        Ok(()) => nix::unistd::fsync(&dir).map_err(|e| cx.io("sync its directory")(e.into())),
        Err(e) => {
            let _ = fsutil::remove_tree(&dir, &tmp);
            Err(e)
        }
    }
}

/// One image's manifest bytes, the manifest parsed, and its config and layer blobs
/// (digest, size).
type ImageBlobs = (Vec<u8>, Value, Vec<(Digest, u64)>);

/// The blobs of one image: manifest, config, layers (digest, size).
fn image_blobs(cx: &Ctx, store: &ContentStore, md: &Digest) -> Result<ImageBlobs, ArchiveError> {
    let mb = store.read(md).map_err(cx.content())?;
    let m: Value =
        serde_json::from_slice(&mb).map_err(|e| cx.bad(format!("manifest {md}: {e}")))?;
    let mut blobs = Vec::new();
    let cd = parse_digest(cx, &m["config"]["digest"], "manifest")?;
    blobs.push((cd, m["config"]["size"].as_u64().unwrap_or(0)));
    for l in m["layers"].as_array().cloned().unwrap_or_default() {
        blobs.push((
            parse_digest(cx, &l["digest"], "manifest")?,
            l["size"].as_u64().unwrap_or(0),
        ));
    }
    Ok((mb, m, blobs))
}

fn index_json(
    cx: &Ctx,
    store: &ContentStore,
    images: &[ExportImage],
) -> Result<(Vec<u8>, BTreeSet<Digest>), ArchiveError> {
    let mut manifests = Vec::new();
    let mut all = BTreeSet::new();
    for img in images {
        let (mb, m, blobs) = image_blobs(cx, store, img.manifest_digest)?;
        let mut desc = json!({
            "mediaType": m["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
            "digest": img.manifest_digest.to_string(),
            "size": mb.len(),
        });
        if let Some(n) = img.name {
            desc["annotations"] =
                json!({"org.opencontainers.image.ref.name": n, "io.containerd.image.name": n});
        }
        manifests.push(desc);
        all.insert(img.manifest_digest.clone());
        all.extend(blobs.into_iter().map(|(d, _)| d));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    Ok((
        serde_json::to_vec(&index).map_err(|e| cx.bad(e.to_string()))?,
        all,
    ))
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn write_layout_dir(
    cx: &Ctx,
    store: &ContentStore,
    images: &[ExportImage],
    dir: &OwnedFd,
) -> Result<(), ArchiveError> {
    let (index, blobs) = index_json(cx, store, images)?;
    let mkdir = |at: &OwnedFd, name: &str| -> Result<OwnedFd, ArchiveError> {
        nix::sys::stat::mkdirat(at, name, nix::sys::stat::Mode::from_bits_truncate(0o755))
            .and_then(|()| fsutil::reopen_dir(at, name))
            .map_err(|e| cx.io(format!("create {name}/"))(e.into()))
    };
    let blobs_dir = mkdir(dir, "blobs")?;
    let mut alg_dirs = Vec::new();
    for alg in ["sha256", "sha512"] {
        alg_dirs.push((alg, mkdir(&blobs_dir, alg)?));
    }
    let create = |at: &OwnedFd, name: &str| -> Result<File, ArchiveError> {
        nix::fcntl::openat(
            at,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map(File::from)
        .map_err(|e| cx.io(format!("write {name}"))(e.into()))
    };
    create(dir, "oci-layout")?
        .write_all(OCI_LAYOUT)
        .map_err(cx.io("write oci-layout"))?;
    create(dir, "index.json")?
        .write_all(&index)
        .map_err(cx.io("write index.json"))?;
    for d in blobs {
        let Some((_, at)) = alg_dirs.iter().find(|(a, _)| *a == d.algorithm().name()) else {
            return Err(cx.bad(format!("blob {d}: no directory for its algorithm")));
        };
        let mut from = store.open_blob(&d).map_err(cx.content())?;
        let mut out = create(at, d.hex())?;
        io::copy(&mut from, &mut out).map_err(cx.io(format!("write blobs/{d}")))?;
        out.sync_all().map_err(cx.io(format!("sync blobs/{d}")))?;
    }
    Ok(())
}

fn write_tar(
    cx: &Ctx,
    file: File,
    f: impl FnOnce(&mut tar::Builder<File>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut b = tar::Builder::new(file);
    f(&mut b)?;
    let mut file = b.into_inner().map_err(cx.io("finish the tar"))?;
    file.flush().map_err(cx.io("write"))?;
    file.sync_all().map_err(cx.io("sync"))
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn append(
    cx: &Ctx,
    b: &mut tar::Builder<File>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), ArchiveError> {
    let mut h = tar_header(size);
    b.append_data(&mut h, name, data)
        .map_err(cx.io(format!("write {name}")))
}

fn write_layout_tar(
    cx: &Ctx,
    store: &ContentStore,
    images: &[ExportImage],
    b: &mut tar::Builder<File>,
) -> Result<(), ArchiveError> {
    let (index, blobs) = index_json(cx, store, images)?;
    append(cx, b, "oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT)?;
    append(cx, b, "index.json", index.len() as u64, &index[..])?;
    for d in blobs {
        let f = store.open_blob(&d).map_err(cx.content())?;
        let size = f.metadata().map_err(cx.io(format!("stat blob {d}")))?.len();
        append(
            cx,
            b,
            &format!("blobs/{}/{}", d.algorithm().name(), d.hex()),
            size,
            f,
        )?;
    }
    Ok(())
}

fn write_docker_tar(
    cx: &Ctx,
    store: &ContentStore,
    images: &[ExportImage],
    b: &mut tar::Builder<File>,
) -> Result<(), ArchiveError> {
    let mut manifest = Vec::new();
    let mut written = BTreeSet::new();
    for img in images {
        let (_, m, _) = image_blobs(cx, store, img.manifest_digest)?;
        let cd = parse_digest(cx, &m["config"]["digest"], "manifest")?;
        let config = store.read(&cd).map_err(cx.content())?;
        let cv: Value =
            serde_json::from_slice(&config).map_err(|e| cx.bad(format!("config {cd}: {e}")))?;
        let diff_ids = cv["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let layers = m["layers"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(cx.bad(format!(
                "image {}: {} diffIDs for {} layers",
                img.manifest_digest,
                diff_ids.len(),
                layers.len()
            )));
        }
        let config_name = format!("{}.json", cd.hex());
        if written.insert(config_name.clone()) {
            append(cx, b, &config_name, config.len() as u64, &config[..])?;
        }
        let mut layer_names = Vec::new();
        for (l, diff) in layers.iter().zip(&diff_ids) {
            let ld = parse_digest(cx, &l["digest"], "manifest")?;
            let diff = parse_digest(cx, diff, "config")?;
            let name = format!("{}/layer.tar", diff.hex());
            if written.insert(name.clone()) {
                write_plain_layer(cx, store, &ld, &name, b)?;
            }
            layer_names.push(name);
        }
        let tags: Vec<&str> = img.name.into_iter().collect();
        manifest.push(json!({"Config": config_name, "RepoTags": tags, "Layers": layer_names}));
    }
    let mj = serde_json::to_vec(&manifest).map_err(|e| cx.bad(e.to_string()))?;
    append(cx, b, "manifest.json", mj.len() as u64, &mj[..])
}

/// A docker archive holds layers uncompressed: decompress into a staging file (its size
/// goes into the tar header before the data), then append it.
fn write_plain_layer(
    cx: &Ctx,
    store: &ContentStore,
    d: &Digest,
    name: &str,
    b: &mut tar::Builder<File>,
) -> Result<(), ArchiveError> {
    let blob = store.open_blob(d).map_err(cx.content())?;
    let mut plain = crate::unpack::decompressed(blob).map_err(cx.io(format!("read layer {d}")))?;
    let stage = store.staging_dir("export").map_err(cx.content())?;
    let r = (|| {
        let p = stage.join("layer.tar");
        let mut f = File::create(&p).map_err(cx.io("stage a layer"))?;
        let size = io::copy(&mut plain, &mut f).map_err(cx.io(format!("decompress layer {d}")))?;
        drop(f);
        append(
            cx,
            b,
            name,
            size,
            File::open(&p).map_err(cx.io("stage a layer"))?,
        )
    })();
    let _ = fs::remove_dir_all(&stage);
    r
}

#[cfg(test)]
mod tests;
