//! The image side of Berth, with no dependency on the runtime: for now the
//! content-addressed blob store every image operation (pull, unpack, import, garbage
//! collection) builds on.

pub mod content;
pub mod digest;

pub use content::{ContentStore, Writer};
pub use digest::{Algorithm, Digest};
