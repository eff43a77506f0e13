//! The container layer that Berth's front ends share.
//!
//! `berthctl` links it and stays daemonless; `berthd` serves the CRI on it. Both open the
//! same [`Store`] under one root, so an image pulled by either is seen by both, and image
//! removal and garbage collection never take what a container of either still uses.
//!
//! - [`store`]: the content store, image metadata, snapshots, pulls and garbage collection.
//! - [`records`]: container records, replaced atomically, with unique names.
//! - [`volumes`]: the image's volumes, copied up into a container's own directories.

pub mod records;
pub mod store;
pub mod volumes;

pub use records::{Record, Records};
pub use store::{PullPolicy, Store, StoreOptions};

use std::path::PathBuf;

/// What the shared layer can fail with. Each variant names what the user named (image,
/// container, file) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image {0:?} is not known (berthctl images lists them)")]
    ImageNotFound(String),
    #[error("image {image} is used by container(s) {users}: remove them first, or use --force")]
    ImageInUse { image: String, users: String },
    #[error("no container named or with ID {0:?}")]
    ContainerNotFound(String),
    #[error("{query:?} matches {count} containers; give more of the ID")]
    AmbiguousContainer { query: String, count: usize },
    #[error("the name {0:?} is taken by another container")]
    NameTaken(String),
    #[error("{what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(transparent)]
    Images(#[from] berth_image::images::ImageError),
    #[error(transparent)]
    Content(#[from] berth_image::content::ContentError),
    #[error(transparent)]
    Snapshot(#[from] berth_image::snapshot::SnapshotError),
    #[error(transparent)]
    Builtin(#[from] berth_image::builtin::BuiltinError),
    #[error(transparent)]
    RegistryConfig(#[from] berth_image::registry::ConfigError),
    #[error(transparent)]
    Pull(#[from] berth_image::registry::PullError),
    #[error("image {image}: {reason}")]
    ImageConfig { image: String, reason: String },
    #[error("volume {volume}: {reason}")]
    Volume { volume: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `map_err` helper: an io error with what was being done.
pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
