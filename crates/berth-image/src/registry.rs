//! Pulling from registries (the OCI distribution spec) with `oci-client`, and what a pull
//! needs around it: image names and short-name resolution, a registries config (mirrors,
//! insecure registries, CA certificates), and credentials in the files podman and docker
//! use.
//!
//! `oci-client` speaks the protocol: manifests with an Accept list, blobs with ranges, basic
//! auth and the bearer-token challenge. Where it falls short, this module fills in:
//! - it has no notion of mirrors, nor of trying https before plain http for an insecure
//!   registry: one client is made per endpoint and scheme, tried in order;
//! - it reads a whole manifest before its size can be checked: the 4 MiB bound is applied
//!   right after, before anything is parsed or stored;
//! - a resumed (ranged) blob is not verified by it: the content store verifies every blob's
//!   size and digest at commit;
//! - it has no call that only checks credentials: `login` probes `/v2/` with `reqwest`
//!   and follows a bearer challenge itself;
//! - it does not retry: transient failures (5xx, lost connections) are retried here with
//!   backoff, resuming blobs where they stopped.

mod auth;
mod config;
mod pull;
mod reference;

pub use auth::{AuthError, AuthStore};
pub use config::{ConfigError, Endpoint, Mirror, RegistriesConfig, RegistryEntry};
pub use pull::{Progress, PullError, PullOptions, Puller};
pub use reference::{ImageName, NameError};

pub use crate::platform::Platform;

/// Installs rustls's ring provider once per process (oci-client and reqwest are built
/// without a default provider).
pub(crate) fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
