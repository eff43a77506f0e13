//! The image side of Berth, with no dependency on the runtime: a content-addressed blob
//! store, registry pull, safe layer unpacking, overlay snapshots, import and export of
//! image archives, and the metadata that ties names to manifests. `berthctl`, the CRI
//! engine and the VM mode all build on it.

pub mod archive;
pub mod build;
pub mod builtin;
pub mod content;
pub mod copyup;
pub mod digest;
pub(crate) mod fsutil;
pub mod images;
pub mod passwd;
pub mod platform;
pub mod registry;
pub mod runconfig;
pub mod snapshot;
pub mod tarbound;
pub mod unpack;

pub use content::{ContentStore, Writer};

/// The most a manifest or an index may hold, from a registry or an archive.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The most an image config may hold.
pub const MAX_CONFIG: u64 = 8 << 20;
pub use digest::{Algorithm, Digest};
pub use images::{ImageRecord, ImageStore};

/// An image whose manifest, config and layers are all in the content store: what a pull or
/// an import hands to the metadata store.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    /// The fully qualified name it came with (`registry/repository:tag`), if any.
    pub name: Option<String>,
    /// Digest of the image manifest (the platform's manifest, not an index); its bytes are
    /// in the content store under this digest.
    pub manifest_digest: Digest,
    /// That manifest, parsed. Docker schema 2 manifests parse into the same type.
    pub manifest: oci_spec::image::ImageManifest,
}
