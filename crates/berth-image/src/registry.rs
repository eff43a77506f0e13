//! Pulling from registries (the OCI distribution spec) with `oci-client`, and what a pull
//! needs around it: image names and short-name resolution, a registries config (mirrors,
//! insecure registries, CA certificates), and credentials in the files podman and docker
//! use.
//!
//! `oci-client` speaks the protocol: manifests with an Accept list, blobs with ranges, basic
//! auth and the bearer-token challenge. It falls short in three places, filled here: it has
//! no notion of mirrors or of trying https before plain http for an insecure registry (one
//! client is made per endpoint, tried in order), it does not bound the size of a manifest
//! before reading it (the size is checked right after, before parsing), and a resumed,
//! ranged blob is not verified by it (the content store verifies every blob at commit).

mod auth;
mod config;
mod pull;
mod reference;

pub use auth::{AuthError, AuthStore};
pub use config::{ConfigError, Endpoint, RegistriesConfig, RegistryEntry};
pub use pull::{Progress, PullError, PullOptions, Puller};
pub use reference::{ImageName, NameError};

pub use crate::platform::Platform;

/// Installs rustls's ring provider once per process (oci-client and reqwest are built
/// without a default provider).
pub(crate) fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
